"""The rows of `mllmtune ls strategies`: what each strategy is, and on a given model how much of it trains."""

from __future__ import annotations

from mllmtune.strategies.registry import REGISTRY

FAMILY_ORDER = ("selective", "additive", "reparameterization")


def strategy_rows(model_id: str | None = None) -> list[dict]:
    """One row per strategy, by family; with `model_id`, its trainable parameters under default options.

    Each strategy is applied to its own copy of the model, so counts never leak from one strategy into the next.
    A strategy whose defaults do not fit the model (e.g. bitfit on a group without biases) gets a note instead.
    """
    order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    strategies = sorted(REGISTRY.values(), key=lambda s: order[s.family])
    rows = [{"name": s.name, "family": s.family, "description": s.description} for s in strategies]
    if model_id is None:
        return rows
    import copy
    import dataclasses

    from mllmtune.errors import UserError
    from mllmtune.models.bundle import load_bundle
    from mllmtune.strategies.targets import count_parameters

    base = load_bundle(model_id)
    for row, strategy in zip(rows, strategies, strict=True):
        bundle = dataclasses.replace(base, model=copy.deepcopy(base.model))
        try:
            model = strategy.build(bundle, strategy.options(), examples=None)
        except UserError as exc:
            row.update(trainable=None, total=None, share=None, note=str(exc))
            continue
        trainable, total = count_parameters(model)
        row.update(trainable=trainable, total=total, share=round(100 * trainable / total, 4), note="")
        del model, bundle
    return rows
