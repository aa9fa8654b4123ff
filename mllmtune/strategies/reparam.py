"""Reparameterization: the update of the targeted dense layers is re-expressed (low rank, scaled, rotated), all
through peft, so every method here merges back into a plain model."""

from __future__ import annotations

import tempfile
import warnings
from typing import Literal

from pydantic import Field

from mllmtune.strategies import targets
from mllmtune.strategies.registry import TargetedOptions, register


class LoraBase(TargetedOptions):
    r: int = Field(8, ge=1, description="rank of the update")
    alpha: float = Field(16.0, gt=0, description="scaling numerator (alpha / r, or alpha / sqrt(r) for rslora)")
    dropout: float = Field(0.0, ge=0, lt=1)
    init: Literal["kaiming", "gaussian"] = Field("kaiming", description="init of A (B starts at zero either way)")


class LoraOptions(LoraBase):
    name: Literal["lora"] = "lora"


class RsLoraOptions(LoraBase):
    name: Literal["rslora"] = "rslora"


class LoraPlusOptions(LoraBase):
    name: Literal["lora-plus"] = "lora-plus"
    lr_ratio: float = Field(16.0, ge=1, description="learning rate of B over that of A")


class DoraOptions(LoraBase):
    name: Literal["dora"] = "dora"


class PissaOptions(TargetedOptions):
    name: Literal["pissa"] = "pissa"
    r: int = Field(8, ge=1)
    alpha: float = Field(8.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    svd_iters: int | None = Field(
        None, ge=1, description="fast randomized SVD with this many iterations; exact if unset"
    )


class VeraOptions(TargetedOptions):
    name: Literal["vera"] = "vera"
    r: int = Field(64, ge=1, description="rank of the shared frozen random projections")
    dropout: float = Field(0.0, ge=0, lt=1)
    d_initial: float = Field(0.1, gt=0, description="initial value of the scaling vector d")


class OftOptions(TargetedOptions):
    name: Literal["oft"] = "oft"
    block_size: int = Field(16, ge=1, description="size of the orthogonal blocks (adjusted to divide each layer)")
    coft: bool = Field(False, description="constrained OFT: keep the rotation close to identity")
    dropout: float = Field(0.0, ge=0, lt=1, description="multiplicative block dropout")


def check_linear(bundle, options) -> None:
    targets.linear_targets(bundle, options.groups, options.name)


def lora_config(bundle, options: LoraBase, **extra):
    from peft import LoraConfig

    return LoraConfig(
        target_modules=targets.linear_targets(bundle, options.groups, options.name),
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        init_lora_weights=True if options.init == "kaiming" else "gaussian",
        **extra,
    )


@register(
    "reparameterization",
    "Low-rank update BA of the targeted dense layers (peft LoRA).",
    LoraOptions,
    check=check_linear,
)
def lora(bundle, options: LoraOptions):
    return targets.wrap_peft(bundle.model, lora_config(bundle, options))


@register(
    "reparameterization",
    "LoRA scaled by alpha/sqrt(r), stable across ranks (peft rsLoRA).",
    RsLoraOptions,
    check=check_linear,
)
def rslora(bundle, options: RsLoraOptions):
    return targets.wrap_peft(bundle.model, lora_config(bundle, options, use_rslora=True))


def _loraplus_optimizer(model, options: LoraPlusOptions, stage):
    import torch
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(
        model,
        torch.optim.AdamW,
        lr=stage.learning_rate,
        loraplus_lr_ratio=options.lr_ratio,
        loraplus_weight_decay=stage.weight_decay,
    )


@register(
    "reparameterization",
    "LoRA with its own, larger learning rate for B (peft LoRA+ optimizer).",
    LoraPlusOptions,
    check=check_linear,
    optimizer=_loraplus_optimizer,
)
def lora_plus(bundle, options: LoraPlusOptions):
    return targets.wrap_peft(bundle.model, lora_config(bundle, options))


@register(
    "reparameterization",
    "Weight-decomposed LoRA: a trained magnitude times a LoRA-updated direction (peft DoRA).",
    DoraOptions,
    check=check_linear,
)
def dora(bundle, options: DoraOptions):
    return targets.wrap_peft(bundle.model, lora_config(bundle, options, use_dora=True))


def _save_pissa(model, directory) -> None:
    # PiSSA moves the principal components out of the base weights; saving the difference to the initial adapter
    # as a plain (rank 2r) LoRA makes the saved adapter apply to the untouched base, like any other LoRA.
    with warnings.catch_warnings():  # peft warns when it loads the initial adapter beside PiSSA to convert it
        warnings.filterwarnings("ignore", message="PiSSA changes the base weights")
        model.save_pretrained(str(directory), path_initial_model_for_weight_conversion=model.mllmtune_pissa_init.name)


@register(
    "reparameterization",
    "LoRA initialised from the principal singular vectors; the residual stays frozen (peft PiSSA).",
    PissaOptions,
    check=check_linear,
    save=_save_pissa,
)
def pissa(bundle, options: PissaOptions):
    from peft import LoraConfig

    init = "pissa" if options.svd_iters is None else f"pissa_niter_{options.svd_iters}"
    config = LoraConfig(
        target_modules=targets.linear_targets(bundle, options.groups, options.name),
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        init_lora_weights=init,
    )
    model = targets.wrap_peft(bundle.model, config)
    # peft's documented conversion recipe: keep the initial adapter, marked as a plain init, until the model is saved.
    initial = tempfile.TemporaryDirectory(prefix="mllmtune-pissa-init-")
    model.peft_config["default"].init_lora_weights = True
    with warnings.catch_warnings():  # "consider converting PiSSA to LoRA": this copy is what makes that possible
        warnings.filterwarnings("ignore", message="PiSSA changes the base weights")
        model.save_pretrained(initial.name)
    model.peft_config["default"].init_lora_weights = init
    model.mllmtune_pissa_init = initial  # removed with the model
    return model


@register(
    "reparameterization",
    "Shared frozen random low-rank projections; only per-layer scaling vectors train (peft VeRA).",
    VeraOptions,
    check=check_linear,
)
def vera(bundle, options: VeraOptions):
    from peft import VeraConfig

    config = VeraConfig(
        target_modules=targets.linear_targets(bundle, options.groups, options.name),
        r=options.r,
        vera_dropout=options.dropout,
        d_initial=options.d_initial,
        save_projection=True,
    )
    return targets.wrap_peft(bundle.model, config)


@register(
    "reparameterization",
    "Orthogonal fine-tuning: a learned block-diagonal rotation of each targeted weight (peft OFT).",
    OftOptions,
    check=check_linear,
)
def oft(bundle, options: OftOptions):
    from peft import OFTConfig

    config = OFTConfig(
        target_modules=targets.linear_targets(bundle, options.groups, options.name),
        r=0,
        oft_block_size=options.block_size,
        coft=options.coft,
        module_dropout=options.dropout,
    )
    return targets.wrap_peft(bundle.model, config)
