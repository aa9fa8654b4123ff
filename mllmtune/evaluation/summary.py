"""Derived numbers of a run (E, F, O and the emotion protocol), defined once for `train` and `report`.

- E (specialization gain): accuracy on the in-domain target (the first target benchmark) minus the base's.
- F (stabilization): mean accuracy over the retention benchmarks minus the base's (negative = forgetting).
- O = E + F.
- A^I: in-domain target accuracy; A^O: mean over the other targets; A: mean over all target columns.
- loss forgetting: increase of the mean answer cross-entropy on the retention benchmarks.
"""

from __future__ import annotations

import math


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def _metric(scores: dict, key: str, metric: str = "accuracy") -> float:
    value = scores.get(key, {}).get(metric)
    return math.nan if value is None else value


def summarize(scores: dict, baseline: dict | None, target: list[str], retention: list[str]) -> dict[str, float]:
    """`target` and `retention` are benchmark keys (`name@version`), in-domain target first."""
    out: dict[str, float] = {}
    if target:
        out["A_I"] = _metric(scores, target[0])
        out["A_O"] = _mean([_metric(scores, k) for k in target[1:]])
        out["A"] = _mean([_metric(scores, k) for k in target])
    if retention:
        out["general"] = _mean([_metric(scores, k) for k in retention])
    if baseline:
        if target:
            out["E"] = out["A_I"] - _metric(baseline, target[0])
        if retention:
            out["F"] = out["general"] - _mean([_metric(baseline, k) for k in retention])
            out["loss_forgetting"] = _mean([_metric(scores, k, "answer_nll") for k in retention]) - _mean(
                [_metric(baseline, k, "answer_nll") for k in retention]
            )
        if "E" in out and "F" in out:
            out["O"] = out["E"] + out["F"]
    return out
