"""Selective tuning: choose which existing weights train."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mllmtune.strategies.registry import Group, StrategyOptions, register


class FullOptions(StrategyOptions):
    name: Literal["full"] = "full"


class FreezeOptions(StrategyOptions):
    name: Literal["freeze"] = "freeze"
    groups: list[Group] = Field(default_factory=lambda: ["vision"], description="module groups to freeze")
    train_last_k: int | None = Field(
        default=None, ge=0, description="if set, also freeze every language layer but the last k"
    )


@register("selective", "Every parameter trains.", FullOptions)
def full(bundle, options: FullOptions):
    for p in bundle.model.parameters():
        p.requires_grad_(True)
    return bundle.model


@register("selective", "Freeze whole module groups, or all but the last k language layers.", FreezeOptions)
def freeze(bundle, options: FreezeOptions):
    frozen_prefixes = [prefix for g in options.groups for prefix in bundle.group_prefixes(g)]
    keep_layers = None
    if options.train_last_k is not None:
        n = bundle.num_language_layers()
        keep_layers = set(range(n - options.train_last_k, n))
    for name, p in bundle.model.named_parameters():
        trainable = not any(name.startswith(prefix) for prefix in frozen_prefixes)
        if trainable and keep_layers is not None and bundle.group_of(name) == "language":
            trainable = bundle.language_layer_index(name) in keep_layers
        p.requires_grad_(trainable)
    return bundle.model
