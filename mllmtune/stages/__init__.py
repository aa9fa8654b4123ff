"""Stages decide how a model trains (SFT, GRPO); strategies decide what trains."""

from __future__ import annotations


def runner(name: str):
    """The stage function for a recipe's `stage.name`; all share `run_sft`'s signature (imported lazily)."""
    if name == "grpo":
        from mllmtune.stages.grpo import run_grpo

        return run_grpo
    from mllmtune.stages.sft import run_sft

    return run_sft
