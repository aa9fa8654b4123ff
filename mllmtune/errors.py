"""Errors the user can fix, kept apart from bugs so the CLI can report them in one line."""

from __future__ import annotations

from typing import NoReturn


class UserError(Exception):
    """An error the user caused (bad recipe, missing file, unknown name).

    The CLI prints ``error: <message>`` as one line and exits with code 2, instead of a traceback.
    """


class RunFailed(Exception):
    """A run that ended `failed` for a reason the suite understands (its training diverged), already recorded with
    its traceback. The CLI prints ``error: <message>`` as one line and exits with code 1."""


def fail(msg: str) -> NoReturn:
    """Raise a :class:`UserError`; reads better than ``raise`` in long validation chains."""
    raise UserError(msg)
