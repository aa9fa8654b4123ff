"""The strategy registry: a strategy decides which parameters train, never how they train.

A strategy is one registered function `apply(bundle, options) -> model` plus a pydantic options model whose
`name` literal is the strategy's name. Recipes validate their `strategy:` section against that options model,
so a key that does not belong to the chosen strategy is rejected by name before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Group = Literal["vision", "projector", "language", "lm_head"]
Family = Literal["selective", "additive", "reparameterization"]


class StrategyOptions(BaseModel):
    """Base of every strategy's options; subclasses add `name: Literal[...]` and their own keys."""

    model_config = ConfigDict(extra="forbid")


class TargetedOptions(StrategyOptions):
    """Options of a strategy that acts on some module groups."""

    groups: list[Group] = Field(default_factory=lambda: ["language"], min_length=1)


@dataclass(frozen=True)
class Strategy:
    name: str
    family: Family
    description: str
    options: type[StrategyOptions]
    apply: Callable


REGISTRY: dict[str, Strategy] = {}


def register(family: Family, description: str, options: type[StrategyOptions]):
    """Register `apply(bundle, options) -> model` under the literal `name` of `options`."""
    name = options.model_fields["name"].annotation.__args__[0]

    def wrap(fn: Callable) -> Callable:
        if name in REGISTRY:
            raise ValueError(f"strategy {name!r} registered twice")
        REGISTRY[name] = Strategy(name, family, description, options, fn)
        return fn

    return wrap


def get(name: str) -> Strategy:
    from mllmtune.errors import UserError

    if name not in REGISTRY:
        raise UserError(f"unknown strategy {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]
