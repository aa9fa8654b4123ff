"""Turn module groups (`vision`, `projector`, `language`, `lm_head`) into module names a method can target.

Groups are parameter-name prefixes (found by `mllmtune.models.groups.discover`), so every lookup here is by kind of
module under those prefixes (`nn.Linear`, normalization layers, attention/MLP blocks), never by a family's module
names: the same recipe line targets the same part of a LLaVA, a Qwen2.5-VL or an Idefics3 model.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mllmtune.errors import UserError

_NORM = re.compile(r"norm", re.IGNORECASE)
_BLOCK = re.compile(r"(Attention|MLP|FeedForward|FFN)$")
_ROUTER = re.compile(r"Router$")


def is_linear(name: str, module) -> bool:
    """Dense layers, including quantized subclasses (bitsandbytes' `Linear4bit` is an `nn.Linear`), but no
    mixture-of-experts router that is one: Llama 4's returns (scores, logits), which no peft layer can wrap."""
    import torch

    return isinstance(module, torch.nn.Linear) and not _ROUTER.search(type(module).__name__)


def is_norm(name: str, module) -> bool:
    """Normalization layers with their own parameters (LayerNorm, RMSNorm, GroupNorm, ... in any family)."""
    return bool(_NORM.search(type(module).__name__)) and any(True for _ in module.parameters(recurse=False))


def is_block(name: str, module) -> bool:
    """Attention and MLP blocks, recognised by class name (LlamaAttention, CLIPMLP, Qwen2_5_VLMLP, ...)."""
    return bool(_BLOCK.search(type(module).__name__))


def in_group(name: str, prefixes: list[str]) -> bool:
    return any((name + ".").startswith(prefix) for prefix in prefixes)


def present_groups(bundle) -> list[str]:
    """The groups that hold at least one parameter of this model."""
    names = [n for n, _ in bundle.model.named_parameters()]
    return [g for g, prefixes in bundle.groups.items() if any(in_group(n, prefixes) for n in names)]


def find(bundle, groups: list[str], kind: Callable, what: str, strategy: str) -> dict[str, list[str]]:
    """Module names of `kind` under each group; a group with none is a UserError naming the groups that have some.

    Names are the model's own `named_modules()` names, which peft matches exactly in `target_modules`.
    """
    found: dict[str, list[str]] = {}
    for group in groups:
        prefixes = bundle.groups.get(group, [])
        found[group] = [n for n, m in bundle.model.named_modules() if n and in_group(n, prefixes) and kind(n, m)]
    empty = [g for g, names in found.items() if not names]
    if empty:
        having = [
            g
            for g, prefixes in bundle.groups.items()
            if any(in_group(n, prefixes) and kind(n, m) for n, m in bundle.model.named_modules() if n)
        ]
        raise UserError(
            f"strategy {strategy!r}: group{'s' if len(empty) > 1 else ''} {', '.join(empty)} match no {what} in this "
            f"{bundle.family} model; its groups: {', '.join(present_groups(bundle)) or 'none'} "
            f"(with {what}: {', '.join(having) or 'none'}); set strategy.groups accordingly"
        )
    return found


def flat(found: dict[str, list[str]]) -> list[str]:
    return [n for names in found.values() for n in names]


def linear_targets(bundle, groups: list[str], strategy: str) -> list[str]:
    """Every dense layer under the groups: the default targets of LoRA-family methods, IA3, OFT, VeRA and mask."""
    return flat(find(bundle, groups, is_linear, "linear layer", strategy))


def norm_targets(bundle, groups: list[str], strategy: str) -> list[str]:
    return flat(find(bundle, groups, is_norm, "normalization layer", strategy))


def block_targets(bundle, groups: list[str], strategy: str) -> list[str]:
    """The outermost attention/MLP blocks of each group; a group without any is itself one block.

    The fallback covers projectors, which are a small MLP in most families but have no `*MLP` class (LLaVA's
    `LlavaMultiModalProjector`, Qwen2.5-VL's patch merger).
    """
    names: list[str] = []
    for group in groups:
        prefixes = bundle.groups.get(group, [])
        blocks = [n for n, m in bundle.model.named_modules() if n and in_group(n, prefixes) and is_block(n, m)]
        outer = [n for n in blocks if not any(n.startswith(other + ".") for other in blocks)]
        if not outer:
            roots = [p.rstrip(".") for p in prefixes]
            modules = dict(bundle.model.named_modules())
            outer = [r for r in roots if r in modules]
        if not outer:
            raise UserError(
                f"strategy {strategy!r}: group {group} matches no module in this {bundle.family} model; its groups: "
                f"{', '.join(present_groups(bundle)) or 'none'}; set strategy.groups accordingly"
            )
        names += outer
    return names


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters, counting 4-bit packed weights by their logical size, not their bytes."""
    trainable = total = 0
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        n = state.shape.numel() if state is not None and hasattr(state, "shape") else p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def wrap_peft(model, config):
    """`get_peft_model` as a causal LM (prompt-learning methods need it; for the others it only adds `generate`)."""
    from peft import get_peft_model

    config.task_type = "CAUSAL_LM"
    if not config.is_prompt_learning:
        return get_peft_model(model, config)
    # peft looks for the word embeddings in the model's first child that is a transformers model; Llama 4's first
    # is its vision model (no `model` wraps the towers), so the child holding the input embeddings goes first
    embeddings = model.get_input_embeddings()
    order = list(model._modules)
    first = [n for n in order if any(m is embeddings for m in model._modules[n].modules())]
    model._modules = {n: model._modules[n] for n in first + [n for n in order if n not in first]}
    try:
        return get_peft_model(model, config)
    finally:
        model._modules = {n: model._modules[n] for n in order if n in model._modules} | model._modules
