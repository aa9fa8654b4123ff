"""Stages by name: a recipe's `stage.name` picks one; its settings model (beside its code) validates the section.

A stage is `run(model, processor, examples, settings, output_dir, seed, progress=None, label=..., optimizer=None,
resume_from=None) -> dict` (the summary the run record keeps under `train`): it trains whatever the strategy left
trainable, on the shared loop (`mllmtune.stages.loop`). Adding one: write its settings (a subclass of
`loop.TrainLoop` with `name: Literal["mine"]`) and its `run`, and `register(Stage("mine", Settings, "pkg.mod:run"))`
before recipes are read (docs/extending.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from mllmtune.stages.grpo import GRPOStage
from mllmtune.stages.sft import SFTStage


@dataclass(frozen=True)
class Stage:
    name: str
    settings: type[BaseModel]
    run: str  # "module:function", imported when a run starts (validating a recipe imports no trainer)
    description: str = ""

    def runner(self) -> Callable[..., dict]:
        module, _, function = self.run.partition(":")
        return getattr(importlib.import_module(module), function)


STAGES: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    known = STAGES.get(stage.name)
    if known is not None and known != stage:
        raise ValueError(f"stage {stage.name!r} is registered twice")
    STAGES[stage.name] = stage
    return stage


def get(name: str) -> Stage:
    if name not in STAGES:
        from mllmtune.errors import UserError

        raise UserError(f"stage.name: unknown stage {name!r}; known: {', '.join(sorted(STAGES))}")
    return STAGES[name]


register(Stage("sft", SFTStage, "mllmtune.stages.sft:run_sft", "supervised fine-tuning, loss on the answer tokens"))
register(Stage("grpo", GRPOStage, "mllmtune.stages.grpo:run_grpo", "GRPO on TRL with rewards by name (EMO-R3)"))
