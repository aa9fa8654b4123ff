"""Rewards by name, and named presets of their weights.

A reward is a plain function in TRL's signature, `f(completions, **columns) -> list[float]`. A *reflective* reward
asks the live policy a question about its own completion, so it is registered as a factory that receives the
stage's `ask` (see `mllmtune.emo_r3.rewards.policy_asker`) and returns the reward function. A recipe names the
rewards and their weights in `stage.rewards`:

    rewards: released                                  # a preset
    rewards: {preset: released, consistency: 0}        # a preset with one term switched off
    rewards: {accuracy: 0.9, format: 0.1}              # explicit weights

Adding a reward: decorate it with `@register("name")` in a module listed in `_BUILTIN` (or imported before the run).
This module stays light (no torch): the recipe schema reads it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

_BUILTIN = ("mllmtune.emo_r3.rewards",)

# Weights of each preset. `released`: SeerRay-Lab/emo-r3 `examples/reward_function/emor3.py` (`compute_score`,
# format_weight 0.1): 0.8·accuracy + 0.1·(coherence + consistency) + 0.1·format, at most 1.1. `paper`: the weighting
# (1 - λ1 - λ2)·accuracy + λ1·(coherence + consistency)/2 + λ2·format with λ1 = λ2 = 0.1, which the suite carried
# before it followed the released code, as the EMO-R3 paper's formula; its section and equation are not checked here.
# `accuracy-format`: the released weights without the reflective terms (plain GRPO on the same scoring).
PRESETS: dict[str, dict[str, float]] = {
    "released": {"accuracy": 0.8, "format": 0.1, "coherence": 0.1, "consistency": 0.1},
    "paper": {"accuracy": 0.8, "format": 0.1, "coherence": 0.05, "consistency": 0.05},
    "accuracy-format": {"accuracy": 0.8, "format": 0.1},
}
DEFAULT_PRESET = "released"


@dataclass(frozen=True)
class Reward:
    name: str
    fn: Callable  # the reward function, or for a reflective reward the factory taking `ask`
    reflective: bool

    def build(self, ask) -> Callable:
        return self.fn(ask) if self.reflective else self.fn


_REGISTRY: dict[str, Reward] = {}


def register(name: str, reflective: bool = False):
    """Register a reward function (or, `reflective=True`, a factory `ask -> reward function`) under `name`."""

    def deco(fn):
        known = _REGISTRY.get(name)
        if known is not None and (known.fn.__module__, known.fn.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"reward {name!r} is registered twice ({known.fn.__module__}.{known.fn.__qualname__})")
        _REGISTRY[name] = Reward(name, fn, reflective)
        return fn

    return deco


def registry() -> dict[str, Reward]:
    for module in _BUILTIN:
        importlib.import_module(module)
    return _REGISTRY


def resolve(spec) -> dict[str, float]:
    """Weights by reward name from a recipe's `stage.rewards` (a preset name, or a mapping with an optional
    `preset` key and weights); raises ValueError naming an unknown preset or reward.

    >>> resolve("paper")["coherence"]
    0.05
    >>> resolve({"preset": "released", "consistency": 0})["consistency"]
    0
    """
    if spec is None:
        spec = DEFAULT_PRESET
    if isinstance(spec, str):
        spec = {"preset": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"a preset name or a mapping of reward weights, got {type(spec).__name__}")
    spec = dict(spec)
    preset = spec.pop("preset", None)
    weights: dict[str, float] = {}
    if preset is not None:
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        weights |= PRESETS[preset]
    known = registry()
    for name, weight in spec.items():
        if not isinstance(name, str) or name not in known:
            names, presets = ", ".join(sorted(known)), ", ".join(PRESETS)
            raise ValueError(f"unknown reward {name!r}; known: {names} (presets: {presets})")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ValueError(f"{name}: a weight must be a number >= 0, got {weight!r}")
        weights[name] = weight
    if not any(weights.values()):
        raise ValueError("every weight is 0; at least one reward term must count")
    return weights


def build(weights: dict[str, float], ask) -> tuple[list[Callable], list[float]]:
    """The reward functions with a weight above 0, and their weights, in the order given (a reflective reward at
    weight 0 is never built, so it costs no generation)."""
    known = registry()
    chosen = [name for name, w in weights.items() if w > 0]
    return [known[name].build(ask) for name in chosen], [weights[name] for name in chosen]
