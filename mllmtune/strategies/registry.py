"""The strategy registry: a strategy decides which parameters train, never how they train.

A strategy is one registered function `apply(bundle, options) -> model` plus a pydantic options model whose
`name` literal is the strategy's name. Recipes validate their `strategy:` section against that options model,
so a key that does not belong to the chosen strategy is rejected by name before anything runs.

A few strategies need more than `apply`; they say so with optional hooks, so stages stay strategy-agnostic:
`preflight(options)` checks the environment before anything is written (qlora's 4-bit kernels),
`check(bundle, options)` checks the model's structure before the baseline is scored (groups that match nothing),
`optimizer(model, options, stage)` builds the stage's optimizer when it needs its own parameter groups (LoRA+),
`uses_examples` asks for the training examples in `apply` (mask chosen by gradient), and `save(model, dir)` /
`load(base_path, dir, options, dtype)` persist hand-written methods (everything else is a Hugging Face model or a
peft adapter, see `mllmtune.strategies.saving`).
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
    preflight: Callable | None = None
    check: Callable | None = None
    optimizer: Callable | None = None
    save: Callable | None = None
    load: Callable | None = None
    uses_examples: bool = False

    def build(self, bundle, options: StrategyOptions, examples: list[dict] | None = None):
        """Check, then apply: the model the stage trains (`bundle.model` itself or a wrapper around it)."""
        if self.preflight:
            self.preflight(options)
        if self.check:
            self.check(bundle, options)
        if self.uses_examples:
            return self.apply(bundle, options, examples=examples)
        return self.apply(bundle, options)


REGISTRY: dict[str, Strategy] = {}


def register(family: Family, description: str, options: type[StrategyOptions], **hooks):
    """Register `apply(bundle, options) -> model` under the literal `name` of `options` (hooks: see `Strategy`)."""
    name = options.model_fields["name"].annotation.__args__[0]

    def wrap(fn: Callable) -> Callable:
        if name in REGISTRY:
            raise ValueError(f"strategy {name!r} registered twice")
        REGISTRY[name] = Strategy(name, family, description, options, fn, **hooks)
        return fn

    return wrap


def get(name: str) -> Strategy:
    from mllmtune.errors import UserError

    if name not in REGISTRY:
        raise UserError(f"unknown strategy {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]
