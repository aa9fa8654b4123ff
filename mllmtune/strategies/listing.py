"""The rows of `mllmtune ls strategies`: what each strategy is and, on a given model, how much of it trains.

With a model, every strategy is applied to its own copy of the model built on the meta device from the config alone
(no weights read, no memory taken), so a 7B recipe is checked on a laptop: trainable and total parameters per
strategy and per module group, and the memory the parameters, their gradients and AdamW's two moment buffers take
when the weights are loaded in each dtype (activations, which depend on the batch, are not counted).
"""

from __future__ import annotations

from mllmtune.strategies.registry import REGISTRY

FAMILY_ORDER = ("selective", "additive", "reparameterization")
DTYPES = ("bfloat16", "float32")  # `model.dtype`; float16 takes what bfloat16 takes
GIB = 1024**3
# QLoRA's 4-bit NormalFloat storage with double quantization: 4 bits per weight, plus 8-bit constants per block of
# 64 weights and a 32-bit constant per 256 such blocks (Dettmers et al. 2023, "QLoRA", section 3, Double
# Quantization: 8/64 + 32/(64*256) = 0.127 bits per parameter). Without double quantization: 32/64 bits.
NF4_BITS = {True: 4 + 8 / 64 + 32 / (64 * 256), False: 4 + 32 / 64}
# Strategies whose setup needs real weights, counted by the strategy with the same trainable shapes: PiSSA's adapters
# start from an SVD of the weights; QLoRA reloads the weights quantized. Both train LoRA's adapters.
STAND_IN = {"pissa": "lora", "qlora": "lora"}


def strategy_rows(model_id: str | None = None) -> list[dict]:
    """One row per strategy, by family; with `model_id` (a model folder, a config file or a hub id), its parameters
    and memory under default options. A strategy whose defaults do not fit the model gets a note instead."""
    order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    strategies = sorted(REGISTRY.values(), key=lambda s: order[s.family])
    rows = [{"name": s.name, "family": s.family, "description": s.description} for s in strategies]
    if model_id is None:
        return rows
    import copy

    from mllmtune.errors import UserError
    from mllmtune.models.bundle import Bundle, module_groups, read_config, skeleton

    config, path = read_config(model_id)
    base = skeleton(config, dtype=_torch_dtype("bfloat16"))
    groups = module_groups(config, model=base)
    for row, strategy in zip(rows, strategies, strict=True):
        bundle = Bundle(model=copy.deepcopy(base), processor=None, family=config.model_type, model_id=model_id,
                        path=path, groups=groups, dtype="bfloat16")  # fmt: skip
        try:
            model = _build_on_meta(strategy, bundle)
        except UserError as exc:
            row.update(trainable=None, total=None, share=None, note=str(exc))
            continue
        row.update(_counts(model, groups))
        row["memory"] = _memory(model, base, strategy)
        row["note"] = (
            f"counted as {STAND_IN[strategy.name]} (same trainable shapes)" if strategy.name in STAND_IN else ""
        )
    return rows


def _torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def _build_on_meta(strategy, bundle):
    """The strategy's model with every new parameter on the meta device too."""
    import torch

    options = strategy.options()
    if strategy.name in STAND_IN:
        stand_in = REGISTRY[STAND_IN[strategy.name]]
        fields = set(stand_in.options.model_fields) - {"name"}
        strategy, options = (
            stand_in,
            stand_in.options(**{k: v for k, v in options.model_dump().items() if k in fields}),
        )
    with torch.device("meta"):
        return strategy.build(bundle, options, examples=None)


def _strip(name: str) -> str:
    """A parameter's name in the base model: wrappers (peft's `base_model.model.`) removed."""
    while name.startswith("base_model.model."):
        name = name[len("base_model.model.") :]
    return name


def _counts(model, groups: dict[str, list[str]]) -> dict:
    from mllmtune.models.groups import _within

    by_group: dict[str, dict[str, int]] = {g: {"trainable": 0, "total": 0} for g in [*groups, "added"]}
    for name, p in model.named_parameters():
        base = _strip(name)
        group = next((g for g, prefixes in groups.items() if any(_within(base, x) for x in prefixes)), "added")
        by_group[group]["total"] += p.numel()
        by_group[group]["trainable"] += p.numel() if p.requires_grad else 0
    trainable = sum(g["trainable"] for g in by_group.values())
    total = sum(g["total"] for g in by_group.values())
    return {
        "trainable": trainable,
        "total": total,
        "share": round(100 * trainable / total, 4),
        "groups": {g: v for g, v in by_group.items() if v["total"]},
    }


def _memory(model, base, strategy) -> dict[str, dict[str, float]]:
    """GiB that parameters, gradients and AdamW's state take per `model.dtype`.

    The model was built in bfloat16: a parameter still in bfloat16 follows the model's dtype, one in float32 stays
    float32 whatever it is (peft keeps adapters of a half-precision model in float32). Gradients and AdamW's two
    moment buffers (torch's `zeros_like`) take each trainable parameter's own dtype. For `qlora`, the frozen linear
    weights transformers quantizes (all but those `get_keys_to_not_convert` keeps, e.g. the output head) take NF4's
    bits, and peft's `prepare_model_for_kbit_training` casts every other parameter to float32.
    """
    import torch

    quantized: set[str] = set()
    if strategy.name == "qlora":
        from transformers.quantizers.base import get_keys_to_not_convert

        keep = get_keys_to_not_convert(base)
        quantized = {
            f"{n}.weight"
            for n, m in base.named_modules()
            if isinstance(m, torch.nn.Linear) and not any(n == k or n.startswith(f"{k}.") for k in keep)
        }
        bits = NF4_BITS[strategy.options().double_quant]
    out = {}
    for dtype in DTYPES:
        size = torch.finfo(_torch_dtype(dtype)).bits // 8
        params = grads = 0.0
        for name, p in model.named_parameters():
            each = 4 if p.dtype == torch.float32 else size
            if quantized and not p.requires_grad:
                each = bits / 8 if _strip(name).replace(".base_layer.", ".") in quantized else 4
            params += p.numel() * each
            grads += p.numel() * each if p.requires_grad else 0
        out[dtype] = {
            "params_gib": round(params / GIB, 3),
            "grads_gib": round(grads / GIB, 3),
            "optimizer_gib": round(2 * grads / GIB, 3),
            "total_gib": round((params + 3 * grads) / GIB, 3),
        }
    return out


def table_rows(rows: list[dict]) -> list[dict]:
    """The rows flattened for a terminal table: counts in millions, memory as total (params/grads/optimizer)."""
    flat = []
    for row in rows:
        out = {"strategy": row["name"]}
        if row.get("trainable") is None:
            flat.append(out | {"trainable M": "-", "%": "-", "by group": "", "note": row.get("note", "")})
            continue
        out["trainable M"] = f"{row['trainable'] / 1e6:,.2f}"
        out["%"] = f"{row['share']:.2f}"
        out["by group"] = " ".join(
            f"{g} {v['trainable'] / 1e6:,.2f}" for g, v in row["groups"].items() if v["trainable"]
        )
        for dtype, mem in row["memory"].items():
            parts = "/".join(f"{mem[k]:.2f}" for k in ("params_gib", "grads_gib", "optimizer_gib"))
            out[f"{dtype} GiB (p/g/o)"] = f"{mem['total_gib']:.2f} ({parts})"
        out["note"] = row["note"]
        flat.append(out)
    return flat


def caption(rows: list[dict]) -> str:
    """The model's size by group (from the frozen-everything count of the first strategy that ran)."""
    row = next(r for r in rows if r.get("groups"))
    base = {g: v["total"] for g, v in row["groups"].items() if g != "added"}
    sizes = " · ".join(f"{g} {n / 1e6:,.1f} M" for g, n in base.items())
    return f"{sum(base.values()) / 1e9:.3f} B parameters: {sizes}; memory excludes activations"
