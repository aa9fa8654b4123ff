"""`mllmtune report` on hand-made tables: E, F, O and their intervals worked out by hand, and the store's rules."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mllmtune.cli import app
from mllmtune.report import stats
from mllmtune.report.leaderboard import build_report
from mllmtune.report.write import write_report
from mllmtune.runs import store

runner = CliRunner()
T, OOD, R = "emoscenes-photo@1", "emoscenes-art@1", "world-general@1"
EVAL = {"target": ["emoscenes-photo", "emoscenes-art"], "retention": ["world-general"], "limit": None}


def record(**kw: Any) -> dict[str, Any]:
    """A valid run record (checked against RunRecord), train stage unless told otherwise."""
    base: dict[str, Any] = dict(
        run_id=kw.get("run_id", "r"),
        created_at="2026-01-01T00:00:00+00:00",
        status="success",
        recipe={"eval": EVAL},
        recipe_hash="h-lora",
        name="lora",
        strategy="lora",
        family="reparameterization",
        stage="sft",
        seed=0,
        model={"id": "world", "revision": "rev1"},
        trainable_params=10,
        total_params=1000,
        wall_s=60.0,
        peak_mem_mb=500.0,
    )
    base.update(kw)
    return store.RunRecord(**base).model_dump(mode="json")


def acc(correct: list[int], nll: float | None = None) -> dict[str, float]:
    out = {"accuracy": 100.0 * sum(correct) / len(correct), "n": float(len(correct))}
    return out | ({"answer_nll": nll} if nll is not None else {})


def save(results: Path, records: list[dict], preds: dict[tuple[str, str], list[int]] | None = None) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    with (results / store.RUNS_FILE).open("a") as handle:
        for rec in records:
            handle.write(json.dumps(rec) + "\n")
    for (run_id, key), correct in (preds or {}).items():
        store.write_predictions(
            results, run_id, key, [{"index": i, "correct": bool(c)} for i, c in enumerate(correct)]
        )
    return results


# The hand-made world: the base gets the 2 in-domain items wrong, the 1 OOD item wrong, the 1 retention item right.
BASE = {T: [0, 0], OOD: [0], R: [1]}
ZERO = record(
    run_id="zs",
    name="zero-shot",
    strategy="none",
    family="none",
    stage="zero-shot",
    recipe_hash="h-zs",
    recipe={"eval": {"benchmarks": ["emoscenes-photo", "emoscenes-art", "world-general"], "limit": None}},
    trainable_params=0,
    scores={T: acc(BASE[T]), OOD: acc(BASE[OOD]), R: acc(BASE[R], nll=1.0)},
)
BASELINE = ZERO["scores"]


def tuned(run_id: str, correct: dict[str, list[int]], **kw: Any) -> dict[str, Any]:
    scores = {k: acc(v, nll=1.5 if k == R else None) for k, v in correct.items()}
    return record(run_id=run_id, scores=scores, baseline=BASELINE, **kw)


FULL = dict(name="sft-full", strategy="full", family="selective", recipe_hash="h-full")


def hand_made(tmp_path: Path) -> Path:
    """Two recipes: `sft-full` with one seed and `lora` with two seeds, all with prediction files."""
    full = {T: [1, 0], OOD: [1], R: [0]}
    lora0, lora1 = {T: [1, 0], OOD: [0], R: [1]}, {T: [1, 1], OOD: [1], R: [0]}
    records = [
        ZERO,
        tuned("full0", full, **FULL),
        tuned("lora0", lora0, seed=0),
        tuned("lora1", lora1, seed=1),
    ]
    preds = {
        (rid, k): c
        for rid, cs in (("zs", BASE), ("full0", full), ("lora0", lora0), ("lora1", lora1))
        for k, c in cs.items()
    }
    return save(tmp_path / "results", records, preds)


def row(lb: pd.DataFrame, recipe: str) -> pd.Series:
    rows = lb[lb["recipe"] == recipe]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_report_matches_numbers_worked_out_by_hand(tmp_path):
    results = hand_made(tmp_path)
    out = tmp_path / "out"
    res = runner.invoke(app, ["report", "--results", str(results), "--out", str(out)])
    assert res.exit_code == 0, res.output
    lb = pd.read_csv(out / "leaderboard.csv")

    # sft-full, one seed. In-domain: tuned [1, 0] vs base [0, 0]: per-item differences [100, 0] points, E = 50.
    # A resample of 2 items has mean 0, 50 or 100 (chances 1/4, 1/2, 1/4), so the 2.5% and 97.5% percentiles of
    # 2000 draws are 0 and 100. Retention: one item, 1 -> 0: F = -100 in every draw. O = E + F per draw: {-100,
    # -50, 0}, interval [-100, 0]. A^I = 50, A^O = 100 (the OOD item turned right), A = 75. Loss: 1.5 - 1.0.
    full = row(lb, "sft-full")
    assert (full.E, full.E_lo, full.E_hi) == (50, 0, 100)
    assert (full.F, full.F_lo, full.F_hi) == (-100, -100, -100)
    assert (full.O, full.O_lo, full.O_hi) == (-50, -100, 0)
    assert (full.A_I, full.A_O, full.A, full.loss_forgetting) == (50, 100, 75, 0.5)
    assert full.family == "selective" and full.n_seeds == 1 and full.trainable_share == 0.01

    # lora, two seeds: in-domain [1, 0] and [1, 1] vs [0, 0]: seed E = 50 and 100, mean 75, std 35.36. Two-level
    # bootstrap: each draw resamples the 2 seeds, then the 2 items. Seeds (0, 0) (chance 1/4): per-item differences
    # [100, 0], draws 0 / 50 / 100 with 1/4, 1/2, 1/4; seeds (1, 1) (1/4): [100, 100], 100; mixed (1/2): [100, 50],
    # 50 / 75 / 100. So E draws 0, 50, 75, 100 with chances 1/16, 1/4, 1/4, 7/16: interval [0, 100]. Retention
    # 1 -> 1 on seed 0 and 1 -> 0 on seed 1: F draws 0 (1/4), -50 (1/2), -100 (1/4): interval [-100, 0]. O = E + F
    # within a draw: (0, 0) gives 0 / 50 / 100, (1, 1) gives 0, mixed 0 / 25 / 50; P(100) = 1/16 > 2.5%, so the
    # interval is [0, 100].
    lora = row(lb, "lora")
    assert (lora.E, lora.E_lo, lora.E_hi) == (75, 0, 100)
    assert (lora.F, lora.F_lo, lora.F_hi) == (-50, -100, 0)
    assert (lora.O, lora.O_lo, lora.O_hi) == (25, 0, 100)
    assert (lora.interval, full.interval) == ("seeds+items", "items")
    assert lora.n_seeds == 2 and lora.E_std == pytest.approx(50 / math.sqrt(2)) and lora.seeds == "0 1"

    base = row(lb, "zero-shot")
    assert (base.E, base.F, base.O, base.stage) == (0, 0, 0, "zero-shot")
    assert list(lb["recipe"]) == ["lora", "zero-shot", "sft-full"]  # sorted by O

    bench = pd.read_csv(out / "leaderboard_by_benchmark.csv")
    ood = bench[(bench.recipe == "sft-full") & (bench.benchmark == OOD)].iloc[0]
    assert (ood.role, ood.accuracy, ood.baseline, ood.delta, ood.delta_lo, ood.delta_hi) == (
        "target",
        100,
        0,
        100,
        100,
        100,
    )
    for name in ("runs.csv", "failed.csv", "report.md", "gain_vs_forgetting.png", "metrics.png"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert "](gain_vs_forgetting.png)" in md and "+25.0 [+0.0, +100.0]" in md and "seeds × items" in md
    assert "lora" in res.output and "sft-full" in res.output


def _reference(tuned_by_key: dict, base_by_key: dict, draws: int, seed: int) -> dict[str, tuple[float, float]]:
    """A plain, loop-by-draw two-level paired bootstrap (seeds, then items), independent of mllmtune.report.stats apart
    from the RNG stream: one seed resample per draw for all benchmarks, then each benchmark's item resample."""
    rng = np.random.default_rng(seed)
    k = len(tuned_by_key[T])
    seed_draws = rng.integers(0, k, size=(draws, k)) if k > 1 else [list(range(k))] * draws
    per_key = {}
    for key in (T, R):
        tuned, base = np.asarray(tuned_by_key[key], float), np.asarray(base_by_key[key], float)
        idx = rng.integers(0, base.size, size=(draws, base.size))
        per_key[key] = np.array(
            [
                np.mean([tuned[s][i].mean() - base[i].mean() for s in seeds]) * 100
                for seeds, i in zip(seed_draws, idx, strict=True)
            ]
        )
    e, f = per_key[T], per_key[R]
    return {m: tuple(np.percentile(v, [2.5, 97.5])) for m, v in (("E", e), ("F", f), ("O", e + f))}


def test_bootstrap_equals_a_plain_reference_implementation():
    rng = np.random.default_rng(7)
    base = {T: rng.random(50) < 0.3, R: rng.random(80) < 0.7}
    tuned = {k: rng.random((3, v.size)) < (0.5 if k == T else 0.6) for k, v in base.items()}
    got = stats.paired_bootstrap({k: stats.Paired(tuned[k], base[k]) for k in (T, R)}, T, [R], seed=3, draws=500)
    want = _reference(tuned, base, draws=500, seed=3)
    for m in ("E", "F", "O"):
        assert getattr(got, m) == pytest.approx(want[m], abs=1e-9)


def test_corrupt_and_partial_lines_are_skipped_with_their_line_number(tmp_path):
    results = hand_made(tmp_path)
    text = (results / store.RUNS_FILE).read_text().splitlines()
    text.insert(2, '{"run_id": "half", "status": "succ')  # line 3: a torn write
    text.insert(4, "")  # a blank line 5 is no record and no warning
    text.insert(5, '{"run_id": "no-status"}')  # line 6: valid JSON, but not a record
    (results / store.RUNS_FILE).write_text("\n".join(text) + "\n{not json at all\n")
    res = runner.invoke(app, ["report", "--results", str(results), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "runs.jsonl:3: skipped, not valid JSON" in res.output and "runs.jsonl:8: skipped" in res.output
    assert "runs.jsonl:6: skipped, missing or malformed 'status'" in res.output
    lb = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    assert row(lb, "lora").O == 25  # the rest of the table is intact
    assert "runs.jsonl:3" in (tmp_path / "out" / "report.md").read_text()


def test_failed_and_cancelled_are_listed_apart_and_never_averaged(tmp_path):
    results = hand_made(tmp_path)
    bad = {T: [0, 0], OOD: [0], R: [0]}  # would drag E and F down if it were counted
    save(
        results,
        [
            tuned("lora2", bad, seed=2, status="failed", error="RuntimeError: out of memory"),
            tuned("lora3", bad, seed=3, status="cancelled", error="interrupted"),
            tuned("lora0b", bad, seed=0, status="failed", created_at="2026-02-01T00:00:00+00:00"),
        ],
    )
    report = build_report(results)
    lora = row(report.leaderboard, "lora")
    assert (lora.E, lora.F, lora.n_seeds) == (75, -50, 2)
    failed = report.failed.set_index("run_id")
    assert set(failed.index) == {"lora2", "lora3", "lora0b"}
    assert failed.loc["lora2", "error"] == "RuntimeError: out of memory" and not failed.loc["lora2", "resolved"]
    assert failed.loc["lora0b", "resolved"]  # a later failure does not hide seed 0's success
    assert not report.runs.set_index("run_id").loc[["lora2", "lora3", "lora0b"], "counted"].any()


def test_latest_success_per_cell_counts(tmp_path):
    results = hand_made(tmp_path)
    better = {T: [1, 1], OOD: [1], R: [1]}
    older = {T: [0, 0], OOD: [0], R: [0]}
    save(
        results,
        [
            tuned("full0-new", better, **FULL, created_at="2026-03-01T00:00:00+00:00"),
            tuned("full0-old", older, **FULL, created_at="2025-12-01T00:00:00+00:00"),  # later in the file, older
        ],
    )
    full = row(build_report(results).leaderboard, "sft-full")
    assert (full.E, full.F, full.n_seeds) == (100, 0, 1)
    # The new run has no prediction files: point estimates from stored scores, intervals left empty.
    assert math.isnan(full.E_lo) and math.isnan(full.O_hi)


def test_same_strategy_different_recipes_stay_apart_and_missing_predictions_do_not_crash(tmp_path):
    results = tmp_path / "results"
    runs = [
        tuned("a", {T: [1, 0], OOD: [0], R: [1]}),
        tuned("b", {T: [1, 1], OOD: [0], R: [0]}, name="lora-vision", recipe_hash="h-lv"),
    ]
    save(results, [ZERO, *runs])  # no prediction files at all  # fmt: skip
    report = build_report(results)
    assert row(report.leaderboard, "lora").E == 50 and row(report.leaderboard, "lora-vision").E == 100
    assert report.leaderboard["E_lo"].isna().all()
    assert any("intervals left empty" in w for w in report.warnings)
    write_report(report, tmp_path / "out")  # plots and markdown cope with empty intervals
    assert (tmp_path / "out" / "metrics.png").stat().st_size > 0


def test_report_without_a_table_is_one_line_exit_2(tmp_path):
    res = runner.invoke(app, ["report", "--results", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no run table" in res.output and "Traceback" not in res.output


def synthetic_table(results: Path, n: int) -> None:
    """``n`` records shaped like real ones (recipe, provenance, four benchmarks): 25 recipes × 2 models × seeds,
    re-runs of the same cell, failures; no prediction files, as after a cleanup of a large results folder."""
    rng = np.random.default_rng(0)
    ev = {"target": ["emoscenes-photo", "emoscenes-art", "emoscenes-web"], "retention": ["world-general"]}
    keys = ["emoscenes-photo@1", "emoscenes-art@1", "emoscenes-web@1", "world-general@1"]
    base = {k: {"accuracy": 30.0, "macro_f1": 20.0, "n": 400.0, "answer_nll": 1.2} for k in keys}
    families = ["selective", "additive", "reparameterization"]
    prov = {"git": {"commit": "0" * 40, "dirty": False}, "packages": {"torch": "2.6", "transformers": "5.0"}}
    lines = []
    for i in range(n):
        r, model, seed = i % 25, f"model-{i % 2}", (i // 50) % 5
        scores = {k: {m: v + rng.normal(0, 5) for m, v in s.items()} for k, s in base.items()}
        status = "failed" if i % 37 == 0 else "success"
        lines.append(json.dumps(dict(
            schema_version=1, run_id=f"run-{i}", created_at=f"2026-01-01T00:{i // 600 % 60:02d}:{i % 60:02d}+00:00",
            status=status, error="RuntimeError: boom" if status == "failed" else None,
            recipe={"name": f"recipe-{r}", "stage": {"epochs": 1}, "eval": ev}, recipe_hash=f"h{r}", name=f"rcp-{r}",
            strategy=f"s{r}", family=families[r % 3], stage="sft", seed=seed, model={"id": model, "revision": None},
            trainable_params=1000 * (r + 1), total_params=10**6, wall_s=100.0, peak_mem_mb=900.0,
            scores=scores if status == "success" else {}, baseline=base, train={}, artifacts={}, provenance=prov,
        )))  # fmt: skip
    results.mkdir(parents=True, exist_ok=True)
    (results / store.RUNS_FILE).write_text("\n".join(lines) + "\n")


def test_report_on_10k_records_is_fast(tmp_path):
    synthetic_table(tmp_path / "results", 10_000)
    t0 = time.perf_counter()
    report = build_report(tmp_path / "results")
    write_report(report, tmp_path / "out")
    seconds = time.perf_counter() - t0
    assert len(report.runs) == 10_000 and report.leaderboard["n_seeds"].max() == 5
    assert len(report.leaderboard) == 50 and len(report.failed) == 271
    assert seconds <= 5.0, f"report took {seconds:.1f}s on 10,000 records"


def test_a_reasoning_template_run_is_read_in_its_own_columns(tmp_path):
    """A GRPO run asked in the emo-r3 template compares with the base asked the same way, not with plain answers."""
    t2, ood2 = "emoscenes-photo/emo-r3-r2@1", "emoscenes-art/emo-r3-r2@1"
    zero_r3 = record(
        run_id="zs-r3", name="zero-shot", strategy="none", family="none", stage="zero-shot", recipe_hash="h-zs-r3",
        recipe={"eval": {"benchmarks": ["emoscenes-photo", "emoscenes-art"], "limit": None, "template": "emo-r3"}},
        trainable_params=0, scores={t2: acc([1, 0]), ood2: acc([0])},
    )  # fmt: skip
    base = {t2: zero_r3["scores"][t2], ood2: zero_r3["scores"][ood2], R: BASELINE[R]}
    grpo = record(
        run_id="g", name="emo-r3", strategy="full", family="selective", stage="grpo", recipe_hash="h-g",
        recipe={"eval": EVAL | {"template": "emo-r3"}}, baseline=base,
        scores={t2: acc([1, 1]), ood2: acc([1]), R: acc([0], nll=1.5)},
    )  # fmt: skip
    report = build_report(save(tmp_path, [ZERO, zero_r3, grpo]))
    row = report.leaderboard.set_index("recipe").loc["emo-r3"]
    assert (row["A_I"], row["A_O"], row["E"], row["F"]) == (100.0, 100.0, 50.0, -100.0)
    assert row["loss_forgetting"] == pytest.approx(0.5)


def test_a_base_asked_only_in_a_reasoning_template_is_read_in_it(tmp_path):
    """A table of GRPO runs holds only the base asked in their template: its row shows those scores, not blanks."""
    t2 = "emoscenes-photo/emo-r3-r2@1"
    zero_r3 = record(
        run_id="zs-r3", name="zero-shot", strategy="none", family="none", stage="zero-shot", recipe_hash="h-zs-r3",
        recipe={"eval": {"benchmarks": ["emoscenes-photo"], "limit": None, "template": "emo-r3"}},
        trainable_params=0, scores={t2: acc([1, 0, 0, 0]), R: BASELINE[R]},
    )  # fmt: skip
    report = build_report(save(tmp_path, [zero_r3]))
    row = report.leaderboard.set_index("recipe").loc["zero-shot"]
    assert row["A_I"] == 25.0
    roles = report.by_benchmark.set_index("benchmark")["role"]
    assert roles[t2] == "in-domain"
