"""The tables behind `mllmtune report`: one leaderboard row per experiment, with intervals against the base.

Only the latest successful record per (recipe hash, seed, model) counts; failed and cancelled runs are listed apart
and never averaged in. E, F, O and the emotion protocol come from :func:`mllmtune.evaluation.summary.summarize` on
stored scores, the one definition; per-sample predictions only add the paired-bootstrap intervals, so a report over
records whose prediction files are gone keeps every point estimate and leaves the intervals empty.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mllmtune.evaluation.summary import summarize
from mllmtune.report.stats import Paired, Scores, pair, paired_bootstrap, read_scores
from mllmtune.runs import store

METRICS = ["E", "F", "O", "loss_forgetting", "A_I", "A_O", "A"]
GROUP = ["model", "strategy", "stage", "recipe", "recipe_hash"]
LEADERBOARD_COLUMNS = (
    ["model", "strategy", "family", "stage", "recipe", "recipe_hash", "n_seeds"]
    + [f"{m}{s}" for m in ("E", "F", "O") for s in ("", "_lo", "_hi")]
    + ["interval", "loss_forgetting", "A_I", "A_O", "A", "trainable_share", "wall_s", "peak_mem_mb"]
    + [f"{m}_std" for m in METRICS]
    + ["seeds"]
)


@dataclass
class Report:
    """Everything `report` writes, as tables; built once so CSV, markdown, plots and terminal agree."""

    results: Path
    leaderboard: pd.DataFrame
    by_benchmark: pd.DataFrame
    runs: pd.DataFrame
    failed: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def _keys(scores: dict, names: list[str], template: str = "plain") -> list[str]:
    """Score keys (`name@version`) for benchmark names; a record's own keys win, so old versions still match.

    A run evaluated in a reasoning template holds its emotion scores as `name/template-rN@version` (N: the
    template's revision; records before revisions: `name/template@version`); those are its columns where they exist
    (retention benchmarks stay plain)."""
    by_name = {k.rsplit("@", 1)[0]: k for k in scores}

    def key(n: str) -> str:
        asked = f"{n}/{template}"
        held = [k for name, k in by_name.items() if name == asked or name.startswith(f"{asked}-r")]
        return held[-1] if template != "plain" and held else by_name.get(n, n)

    return [key(n) for n in names]


def _template(rec: dict) -> str:
    return ((rec.get("recipe") or {}).get("eval") or {}).get("template") or "plain"


def _roles(rec: dict) -> tuple[list[str], list[str]]:
    ev = (rec.get("recipe") or {}).get("eval") or {}
    if not ev.get("target") or not ev.get("retention"):  # a record that left them out: the plug-ins' defaults
        from mllmtune.config import defaults

        ev = (defaults.apply({"eval": {}}).get("eval") or {}) | {k: v for k, v in ev.items() if v}
    return list(ev.get("target") or []), list(ev.get("retention") or [])


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def _flatten(
    rec: dict, scores: dict, baseline: dict | None, roles: tuple[list[str], list[str]], template: str | None = None
) -> dict[str, Any]:
    """One flat row: identity, cost and the derived numbers of one record (in `template`, default the record's)."""
    model = rec.get("model") if isinstance(rec.get("model"), dict) else {}
    template = template or _template(rec)
    target, retention = _keys(scores, roles[0], template), _keys(scores, roles[1], template)
    derived = summarize(scores, baseline, target, retention) if scores else {}
    trainable, total = _num(rec.get("trainable_params")), _num(rec.get("total_params"))
    error = str(rec.get("error") or "").strip().splitlines()
    return {
        "run_id": rec.get("run_id"),
        "created_at": rec.get("created_at"),
        "status": rec.get("status"),
        "model": model.get("id"),
        "model_revision": model.get("revision"),
        "recipe": rec.get("name"),
        "strategy": rec.get("strategy"),
        "family": rec.get("family"),
        "stage": rec.get("stage"),
        "seed": rec.get("seed"),
        "recipe_hash": rec.get("recipe_hash"),
        "eval_limit": ((rec.get("recipe") or {}).get("eval") or {}).get("limit"),
        **{m: derived.get(m, math.nan) for m in METRICS},
        "trainable_params": trainable,
        "total_params": total,
        "trainable_share": trainable / total if total and total > 0 else math.nan,
        "wall_s": _num(rec.get("wall_s")),
        "peak_mem_mb": _num(rec.get("peak_mem_mb")),
        "error": error[-1][:300] if error else "",
        "_target": target,
        "_retention": retention,
    }


def _well_formed(rec: dict) -> str | None:
    for name, kind in (("status", str), ("name", str), ("stage", str), ("model", dict), ("scores", dict)):
        if not isinstance(rec.get(name, {} if name == "scores" else None), kind):
            return f"missing or malformed '{name}'"
    return None


def _record_lines(path: Path) -> list[int]:
    """Line numbers of the records `read_records` returns, in its order; only read when a record is malformed."""
    with path.open("rb") as handle:
        return [n for n, raw in enumerate(handle, start=1) if raw.strip() and isinstance(_loads(raw), dict)]


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


class _Predictions:
    """Per-item scores of stored runs, read once each; nothing is read when the folder has no `runs/`."""

    def __init__(self, results: Path) -> None:
        self.results, self.enabled, self.cache = results, store.Results(results).has_predictions(), {}

    def get(self, run_id: str, key: str) -> Scores | None:
        if self.enabled and (run_id, key) not in self.cache:
            self.cache[run_id, key] = read_scores(store.predictions_path(self.results, run_id, key))
        return self.cache.get((run_id, key))


def _zero_shot_index(records: list[dict]) -> dict[tuple, list[tuple[str, float]]]:
    """(model id, revision, eval limit, benchmark key) -> [(zero-shot run id, accuracy)], latest first.

    `runs.zero_shot.baseline_scores` merges these records in file order; a run is paired with the latest one whose
    accuracy equals the baseline the run stored, so its intervals use the very predictions it was compared against.
    """
    index: dict[tuple, list[tuple[str, float]]] = {}
    for rec in reversed(records):
        if rec.get("stage") == "zero-shot" and rec.get("status") == "success":
            model, limit = rec["model"], ((rec.get("recipe") or {}).get("eval") or {}).get("limit")
            for key, metrics in rec["scores"].items():
                acc = _num((metrics or {}).get("accuracy") if isinstance(metrics, dict) else None)
                index.setdefault((model.get("id"), model.get("revision"), limit, key), []).append((rec["run_id"], acc))
    return index


def _same(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, abs_tol=1e-6)


def _baseline_run(group: list[dict], key: str, zs: dict) -> str | None:
    """The zero-shot run whose predictions a group's runs were compared against on `key`.

    Runs record it (`baseline_runs`); older records are matched by model, revision, limit and the stored accuracy.
    """
    named = {(r.get("_baseline_runs") or {}).get(key) for r in group}
    if len(named) == 1 and None not in named:
        return named.pop()
    first = group[0]
    stored = {r["_baseline_acc"].get(key) for r in group}
    candidates = zs.get((first["model"], first["model_revision"], first["eval_limit"], key), [])
    return next((rid for rid, acc in candidates if stored and all(_same(s, acc) for s in stored)), None)


def _paired(group: list[dict], key: str, zs: dict, preds: _Predictions):
    """A group's per-item scores on `key` aligned with its baseline's: `Paired`, a reason they do not pair, or
    ``None`` when a predictions file is missing."""
    base_id = _baseline_run(group, key, zs)
    base = preds.get(base_id, key) if base_id else None
    tuned = [preds.get(r["run_id"], key) for r in group]
    if base is None or any(t is None for t in tuned):
        return None
    return pair(tuned, base)


def _group_intervals(group: list[dict], zs: dict, preds: _Predictions, notes: list[str]):
    """Bootstrap intervals for one leaderboard row, or ``None`` when any needed prediction file is missing or the
    items do not pair (said in `notes`). Benchmarks beside F get their own intervals where their items pair."""
    first = group[0]
    target, retention = first["_target"], first["_retention"]
    pairs = {}
    for key in dict.fromkeys(target + retention):
        paired = _paired(group, key, zs, preds)
        if isinstance(paired, str):
            notes.append(f"{first['recipe']} ({first['model']}), {key}: {paired}; its intervals are left empty")
        if not isinstance(paired, Paired):
            return None
        pairs[key] = paired
    if not pairs:
        return None
    for key in first.get("_scores", {}):
        if key not in pairs and isinstance(paired := _paired(group, key, zs, preds), Paired):
            pairs[key] = paired
    return paired_bootstrap(pairs, target[0] if target else None, retention)


def build_report(results: str | Path) -> Report:
    """Read the run table once and derive every table of the report."""
    results = Path(results)
    records, notes = store.read_records(results)
    problems = [_well_formed(rec) for rec in records]
    good = [rec for rec, problem in zip(records, problems, strict=True) if problem is None]
    if len(good) < len(records):
        lines = _record_lines(store.runs_file(results))
        notes += [f"{store.RUNS_FILE}:{n}: skipped, {p}" for n, p in zip(lines, problems, strict=False) if p]
        notes.sort(key=lambda w: int(m.group(1)) if (m := re.match(r"\S+?:(\d+):", w)) else 0)
    counted = {id(r) for r in store.latest_successful(good).values()}
    roles_by_model: dict[Any, tuple[list[str], list[str]]] = {}
    for rec in good:
        if rec["stage"] != "zero-shot":
            roles_by_model.setdefault(rec["model"].get("id"), _roles(rec))

    rows, train_rows = [], []
    for rec in good:
        zero = rec["stage"] == "zero-shot"
        roles = roles_by_model.get(rec["model"].get("id"), _roles({})) if zero else _roles(rec)
        row = _flatten(rec, rec["scores"], rec["scores"] if zero else rec.get("baseline"), roles)
        row["counted"] = id(rec) in counted
        rows.append(row)
        if row["counted"] and not zero:
            row["_scores"], row["_baseline"] = rec["scores"], rec.get("baseline") or {}
            row["_baseline_acc"] = {k: _num(v.get("accuracy")) for k, v in row["_baseline"].items()}
            row["_baseline_runs"] = rec.get("baseline_runs") or {}
            train_rows.append(row)

    runs = pd.DataFrame(rows, columns=list(_flatten({}, {}, None, ([], [])).keys()) + ["counted"])
    failed = runs[runs["status"].isin(["failed", "cancelled"])].copy()
    done = {store.record_key(r) for r in good if id(r) in counted}
    failed["resolved"] = [
        (h, s, m) in done for h, s, m in zip(failed["recipe_hash"], failed["seed"], failed["model"], strict=True)
    ]
    failed = failed[
        ["created_at", "status", "model", "recipe", "strategy", "seed", "recipe_hash", "run_id", "error", "resolved"]
    ]

    zs_index = _zero_shot_index(good)
    leaderboard, by_bench, no_pred = _leaderboard(
        train_rows, _zero_shot_rows(good, roles_by_model), zs_index, results, notes
    )
    if no_pred:
        notes.append(f"{no_pred} leaderboard row(s) without per-sample predictions: intervals left empty")
    runs = runs.drop(columns=["_target", "_retention"]).sort_values("created_at", kind="stable")
    return Report(results, leaderboard, by_bench, runs.reset_index(drop=True), failed.reset_index(drop=True), notes)


def _zero_shot_rows(good: list[dict], roles_by_model: dict) -> list[dict]:
    """One baseline row per (model, revision, eval limit), its zero-shot records merged as `baseline_scores` does."""
    merged: dict[tuple, dict] = {}
    for rec in good:
        if rec["stage"] == "zero-shot" and rec["status"] == "success":
            limit = ((rec.get("recipe") or {}).get("eval") or {}).get("limit")
            cell = merged.setdefault(
                (rec["model"].get("id"), rec["model"].get("revision"), limit), {"recs": [], "scores": {}}
            )
            cell["recs"].append(rec)
            cell["scores"].update(rec["scores"])
    out = []
    limits = Counter(model for model, _, _ in merged)
    for (model, _rev, limit), cell in merged.items():
        last = cell["recs"][-1]
        # Plain answers where the base was asked for them; else the template it was asked in (a table of GRPO runs
        # alone holds only the base asked in theirs).
        templates = [_template(r) for r in cell["recs"]]
        template = "plain" if "plain" in templates else templates[-1]
        row = _flatten(last, cell["scores"], cell["scores"], roles_by_model.get(model, _roles({})), template)
        row["recipe"] = "zero-shot" if limits[model] == 1 else f"zero-shot (limit {limit})"
        row["wall_s"] = sum(_num(r.get("wall_s")) for r in cell["recs"])
        row["recipe_hash"] = "+".join(dict.fromkeys(str(r.get("recipe_hash")) for r in cell["recs"]))
        row["_scores_merged"] = cell["scores"]
        out.append(row)
    return out


def _bench_rows(key: tuple, group: list[dict], intervals) -> list[dict]:
    """Per-benchmark accuracy of one leaderboard row against its baseline, averaged over seeds."""
    target, retention = group[0]["_target"], group[0]["_retention"]
    out = []
    for bench in dict.fromkeys(target + retention + list(group[0]["_scores"])):
        acc = np.array([_num((r["_scores"].get(bench) or {}).get("accuracy")) for r in group])
        base = np.array([_num((r["_baseline"].get(bench) or {}).get("accuracy")) for r in group])
        lo, hi = (intervals.per_benchmark.get(bench) if intervals else None) or (math.nan, math.nan)
        role = "in-domain" if target and bench == target[0] else "target" if bench in target else "retention"
        out.append(
            dict(zip(GROUP, key, strict=True), family=group[0]["family"], benchmark=bench)
            | dict(role=role if bench in target + retention else "beside F", n_seeds=len(group))
            | dict(accuracy=np.nanmean(acc), baseline=np.nanmean(base), delta_lo=lo, delta_hi=hi)
        )
    return out


_MEANS = METRICS + ["trainable_share", "wall_s", "peak_mem_mb"]


def _leaderboard(train_rows: list[dict], zero_rows: list[dict], zs_index: dict, results: Path, notes: list[str]):
    """Average counted runs over seeds per group, attach intervals, and lay out the per-benchmark table."""
    preds = _Predictions(results)
    groups: dict[tuple, list[dict]] = {}
    for row in train_rows:
        groups.setdefault(tuple(row[k] for k in GROUP), []).append(row)
    lb_rows, bench_rows, no_pred = [], [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (a metric no seed has) stay NaN quietly
        for key, group in groups.items():
            said = len(notes)
            intervals = _group_intervals(group, zs_index, preds, notes)
            no_pred += intervals is None and len(notes) == said
            values = np.array([[r[m] for m in _MEANS] for r in group], dtype=float)
            row = dict(zip(GROUP, key, strict=True), family=group[0]["family"], n_seeds=len(group))
            row |= dict(zip(_MEANS, np.nanmean(values, axis=0), strict=True))
            std = np.nanstd(values[:, : len(METRICS)], axis=0, ddof=1) if len(group) > 1 else [math.nan] * len(METRICS)
            row |= {f"{m}_std": v for m, v in zip(METRICS, std, strict=True)}
            row["seeds"] = " ".join(str(s) for s in sorted(r["seed"] for r in group))
            row["interval"] = intervals.levels if intervals is not None else ""
            for m in ("E", "F", "O"):
                lo_hi = getattr(intervals, m) if intervals is not None else None
                row[f"{m}_lo"], row[f"{m}_hi"] = lo_hi if lo_hi is not None else (math.nan, math.nan)
            lb_rows.append(row)
            bench_rows += _bench_rows(key, group, intervals)
        for z in zero_rows:  # a benchmark the base was not scored on stays NaN quietly here too
            lb_rows.append({k: z[k] for k in GROUP + _MEANS + ["family"]} | {"n_seeds": 1, "seeds": str(z["seed"])})
            z |= {"_scores": z["_scores_merged"], "_baseline": z["_scores_merged"]}
            bench_rows += _bench_rows(tuple(z[k] for k in GROUP), [z], None)
    leaderboard = pd.DataFrame(lb_rows, columns=LEADERBOARD_COLUMNS)
    leaderboard = leaderboard.sort_values("O", ascending=False, na_position="last", kind="stable")
    columns = GROUP + ["family", "benchmark", "role", "n_seeds", "accuracy", "baseline", "delta_lo", "delta_hi"]
    by_bench = pd.DataFrame(bench_rows, columns=columns)
    by_bench.insert(by_bench.columns.get_loc("delta_lo"), "delta", by_bench["accuracy"] - by_bench["baseline"])
    rank = {tuple(r): i for i, r in enumerate(leaderboard[GROUP].itertuples(index=False))}
    order = [rank.get(k, len(rank)) for k in zip(*(by_bench[c] for c in GROUP), strict=True)]
    by_bench = by_bench.assign(_rank=order).sort_values("_rank", kind="stable").drop(columns="_rank")
    return leaderboard.reset_index(drop=True), by_bench.reset_index(drop=True), no_pred
