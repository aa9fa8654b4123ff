"""What a recipe means where it leaves a section out: the defaults a plug-in registers (the embedded world's:
its model, its data and its benchmarks). Without a plug-in, `model.id`, `data` and `eval.target` are required."""

from __future__ import annotations

from collections.abc import Callable

# Each takes the recipe as read (a dict) and returns it with what it fills in; applied in registration order.
_FILLERS: list[Callable[[dict], dict]] = []


def register(fill: Callable[[dict], dict]) -> None:
    _FILLERS.append(fill)


def apply(data: dict) -> dict:
    for fill in _FILLERS:
        data = fill(data)
    return data
