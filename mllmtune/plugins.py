"""Plug-ins: packages that add model ids, data sources, benchmarks, recipe defaults and commands.

A plug-in is an entry point in the group ``mllmtune.plugins`` naming a function that takes no argument and
registers what the package provides through the suite's own registries:

- `mllmtune.strategies.registry.register` (what trains), `mllmtune.stages.registry.register` (how it trains),
  `mllmtune.rewards.register` (GRPO rewards by name),
- `mllmtune.models.bundle.register_model_id` (a model id such as ``world`` resolved to a local folder),
- `mllmtune.data.registry.register` (a data source: its recipe section and its rows),
- `mllmtune.evaluation.benchmarks.register` (benchmarks scored by name),
- `mllmtune.config.defaults.register` (what a recipe that leaves out model, data or eval means),
- `register_commands` below (sub-commands of the ``mllmtune`` command line).

Plug-ins load before the recipe schema is built from the registries, so a strategy, stage or data source a plug-in
registers is a recipe option like a built-in one (docs/extending.md). The embedded world is one
(``mllmtune/world/plugin.py``, declared in pyproject.toml). `load` is the one place plug-ins are imported: nothing
else in the suite imports a plug-in's modules. A plug-in that fails to import is skipped with a warning, so a
broken extra never stops the core.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

GROUP = "mllmtune.plugins"
_LOADED: list[str] | None = None
_COMMANDS: list[Callable] = []


def load() -> list[str]:
    """Import and register every installed plug-in once; the names of those loaded."""
    global _LOADED
    if _LOADED is not None:
        return _LOADED
    from importlib.metadata import entry_points

    _LOADED = []
    for entry in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            register = entry.load()
        except ImportError as exc:
            warnings.warn(f"plug-in {entry.name!r} ({entry.value}) not loaded: {exc}", stacklevel=2)
            continue
        register()
        _LOADED.append(entry.name)
    return _LOADED


def register_commands(attach: Callable) -> None:
    """`attach(app, command, console)` adds a plug-in's commands to the typer app (`command` wraps a function so
    that a UserError is one line and exit code 2)."""
    _COMMANDS.append(attach)


def commands() -> list[Callable]:
    load()
    return list(_COMMANDS)
