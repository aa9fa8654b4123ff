"""What every settings section shares: unknown keys refused, and a name checked against a fixed list."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A recipe section: unknown keys are refused (the error names the keys allowed there)."""

    model_config = ConfigDict(extra="forbid")


def one_of(value: str, known: tuple[str, ...], problem: str) -> str:
    """`value` if it is one of `known`; else a ValueError that lists them (the recipe key is added by `validate`)."""
    if value not in known:
        raise ValueError(f"{problem} {value!r}; known: {', '.join(known)}")
    return value
