"""Selective tuning: choose which existing weights train (whole groups, biases, norms, or a sparse mask)."""

from __future__ import annotations

import warnings
from typing import Literal

from pydantic import Field

from mllmtune.errors import UserError
from mllmtune.strategies import targets
from mllmtune.strategies.registry import Group, StrategyOptions, TargetedOptions, register


class FullOptions(StrategyOptions):
    name: Literal["full"] = "full"


class FreezeOptions(StrategyOptions):
    name: Literal["freeze"] = "freeze"
    groups: list[Group] = Field(default_factory=lambda: ["vision"], description="module groups to freeze")
    train_last_k: int | None = Field(
        default=None, ge=0, description="if set, also freeze every language layer but the last k"
    )


class BitFitOptions(TargetedOptions):
    name: Literal["bitfit"] = "bitfit"
    groups: list[Group] = Field(default_factory=lambda: ["vision", "projector", "language"], min_length=1)


class LNTuningOptions(TargetedOptions):
    name: Literal["ln-tuning"] = "ln-tuning"


class MaskOptions(TargetedOptions):
    name: Literal["mask"] = "mask"
    fraction: float = Field(0.05, gt=0, le=1, description="share of each weight matrix's entries that may change")
    select: Literal["magnitude", "gradient"] = "magnitude"
    calibration_examples: int = Field(32, ge=1, description="training examples scored for select: gradient")


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


def _has_bias(name: str, module) -> bool:
    return any(n == "bias" for n, _ in module.named_parameters(recurse=False))


def _check_bitfit(bundle, options: BitFitOptions) -> None:
    # A group without bias terms (e.g. a Llama decoder without attention/MLP biases) is refused rather than
    # silently left out: bitfit there would train nothing and the run would be mislabelled.
    targets.find(bundle, options.groups, _has_bias, "bias term", options.name)


@register(
    "selective",
    "Only bias terms train (linear, conv and norm biases); a group without biases is refused by name.",
    BitFitOptions,
    check=_check_bitfit,
)
def bitfit(bundle, options: BitFitOptions):
    prefixes = [prefix for g in options.groups for prefix in bundle.group_prefixes(g)]
    for name, p in bundle.model.named_parameters():
        p.requires_grad_(name.endswith(".bias") and targets.in_group(name, prefixes))
    return bundle.model


def _check_ln(bundle, options: LNTuningOptions) -> None:
    targets.norm_targets(bundle, options.groups, options.name)


@register(
    "selective",
    "Only normalization layers (LayerNorm / RMSNorm) train (peft LN tuning).",
    LNTuningOptions,
    check=_check_ln,
)
def ln_tuning(bundle, options: LNTuningOptions):
    from peft import LNTuningConfig

    names = targets.norm_targets(bundle, options.groups, options.name)
    with warnings.catch_warnings():  # peft probes every target for in/out features and warns on norms; harmless
        warnings.filterwarnings("ignore", message="Unsupported layer type")
        return targets.wrap_peft(bundle.model, LNTuningConfig(target_modules=names))


def _check_mask(bundle, options: MaskOptions) -> None:
    targets.linear_targets(bundle, options.groups, options.name)


@register(
    "selective",
    "Sparse update: only the top fraction of each weight matrix's entries (by magnitude or gradient) ever changes.",
    MaskOptions,
    check=_check_mask,
    uses_examples=True,
)
def mask(bundle, options: MaskOptions, examples: list[dict] | None = None):
    """peft's Super-Tuning keeps the frozen weight plus trainable values at fixed flat indices (`W + scatter(v)`),
    so only the chosen entries can change whatever the optimizer does (weight decay included), the trainable state
    is the sparse values alone, and the update merges exactly. peft selects by magnitude only; for `gradient` the
    indices are replaced by the top entries of the empirical Fisher (summed squared gradients of the training loss
    on `calibration_examples` examples), as in FISH-mask. The indices are saved with the adapter.
    """
    from peft import SupertuningConfig

    names = targets.linear_targets(bundle, options.groups, options.name)
    scores = None
    if options.select == "gradient":
        if not examples:
            raise UserError("strategy 'mask' with select: gradient needs training examples to score gradients")
        scores = _fisher_scores(bundle, names, examples[: options.calibration_examples])
    config = SupertuningConfig(target_modules=names, sparsity=1.0 - options.fraction)
    model = targets.wrap_peft(bundle.model, config)
    if scores is not None:
        _reselect(model, scores)
    return model


def _fisher_scores(bundle, names: list[str], examples: list[dict], batch_size: int = 8) -> dict:
    import torch

    from mllmtune.data.chat import ChatCollator

    model = bundle.model
    modules = dict(model.named_modules())
    was_training, grads = model.training, {n: p.requires_grad for n, p in model.named_parameters()}
    model.eval()  # no dropout: the scores are a property of the weights, not of a random mask
    for p in model.parameters():
        p.requires_grad_(False)
    weights = {n: modules[n].weight for n in names}
    for w in weights.values():
        w.requires_grad_(True)
    scores = {n: torch.zeros_like(w, dtype=torch.float32) for n, w in weights.items()}
    collate = ChatCollator(bundle.processor)
    try:
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start : start + batch_size])
            batch = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in batch.items()}
            model(**batch).loss.backward()
            for n, w in weights.items():
                if w.grad is not None:
                    scores[n] += w.grad.detach().float() ** 2
                w.grad = None
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(grads[n])
        model.train(was_training)
    return scores


def _reselect(model, scores: dict) -> None:
    """Swap peft's magnitude indices for the top-k gradient scores, keeping k (the fraction) per matrix."""
    import torch
    from peft.tuners.supertuning.layer import SupertuningLayer

    for name, module in model.named_modules():
        if not isinstance(module, SupertuningLayer):
            continue
        base_name = name.removeprefix("base_model.model.")
        for adapter, old in module.supertuning_indices.items():
            k = old.numel()
            top = torch.topk(scores[base_name].flatten(), k=k).indices
            module.supertuning_indices[adapter] = top.to(dtype=old.dtype, device=old.device)
