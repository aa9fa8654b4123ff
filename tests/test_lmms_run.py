"""End to end, offline: a tiny model tuned with LoRA, its retention scored by lmms-eval on local tasks (a POPE-style
yes/no set and a VQA set with ten answers per question), then E/F/O and paired intervals in `mllmtune report`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from test_lmms import POPE_YAML, VQA_UTILS, VQA_YAML, _pope_rows, _vqa_rows, _write
from typer.testing import CliRunner

from mllmtune.cli import app
from mllmtune.runs import store

pytestmark = pytest.mark.slow
runner = CliRunner()


def _recipe(tmp_path, tasks, seed: int = 0) -> str:
    path = tmp_path / f"lora-{seed}.yaml"
    recipe = {
        "name": "lora-lmms",
        "seed": seed,
        "model": {"id": "world"},
        "data": {"source": "world", "domain": "photo", "limit": 16},
        "strategy": {"name": "lora", "groups": ["language"], "r": 4, "alpha": 8},
        "stage": {"max_steps": 2, "batch_size": 8, "warmup_ratio": 0.0, "learning_rate": 1e-3},
        "eval": {
            "target": ["emoscenes-photo"],
            "retention": ["lmms:pope_local", "lmms:vqa_local"],
            "lmms": {"include_path": str(tasks), "max_new_tokens": 8},
            "batch_size": 8,
        },
    }
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_lora_with_lmms_retention_reaches_the_report(micro_world, tmp_path):
    tasks = tmp_path / "tasks"
    _write(tasks / "pope", "pope_local", POPE_YAML, _pope_rows(8))
    _write(tasks / "vqa", "vqa_local", VQA_YAML, _vqa_rows([["red"] * 3 + ["blue"] * 7] * 4), VQA_UTILS)
    results = tmp_path / "results"
    for seed in (0, 1):
        res = runner.invoke(app, ["train", "--recipe", _recipe(tmp_path, tasks, seed), "--results", str(results)])
        assert res.exit_code == 0, res.output
    records, _ = store.read_records(results)
    assert [r["stage"] for r in records] == ["zero-shot", "sft", "sft"]  # the second seed reuses the baseline
    keys = {"emoscenes-photo@1", "lmms:pope_local@0.0", "lmms:vqa_local@1"}
    run = records[1]
    assert set(run["scores"]) == keys and set(run["baseline_runs"]) == keys
    assert run["baseline_runs"]["lmms:vqa_local@1"] == records[0]["run_id"]

    # F from the stored per-item scores, computed here without the suite: mean over the two retention sets of the
    # per-seed mean difference from the base, in points.
    def per_item(run_id, key):
        rows = [json.loads(x) for x in store.predictions_path(results, run_id, key).read_text().splitlines()]
        return {r["id"]: float(r["correct"]) for r in rows}

    base_id = records[0]["run_id"]
    deltas = []
    for key in ("lmms:pope_local@0.0", "lmms:vqa_local@1"):
        base = per_item(base_id, key)
        seeds = [per_item(r["run_id"], key) for r in records[1:]]
        assert all(s.keys() == base.keys() for s in seeds)
        deltas.append(np.mean([100 * np.mean([s[i] - base[i] for i in base]) for s in seeds]))
    out = tmp_path / "report"
    res = runner.invoke(app, ["report", "--results", str(results), "--out", str(out)])
    assert res.exit_code == 0, res.output
    lb = pd.read_csv(out / "leaderboard.csv")
    row = lb[lb.recipe == "lora-lmms"].iloc[0]
    assert row.F == pytest.approx(np.mean(deltas))
    assert row.F_lo <= row.F <= row.F_hi and row.E_lo <= row.E <= row.E_hi
    assert row.interval == "seeds+items" and row.n_seeds == 2
    by_bench = pd.read_csv(out / "leaderboard_by_benchmark.csv")
    assert {"lmms:pope_local@0.0", "lmms:vqa_local@1"} <= set(by_bench.benchmark)
    assert "seeds × items" in (out / "report.md").read_text()


def test_unknown_lmms_task_is_one_line_with_close_matches(micro_world, tmp_path):
    tasks = tmp_path / "tasks"
    _write(tasks / "pope", "pope_local", POPE_YAML, _pope_rows(4))
    recipe = yaml.safe_load(open(_recipe(tmp_path, tasks)))
    recipe["eval"]["retention"] = ["lmms:pope_locl"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    res = runner.invoke(app, ["train", "--recipe", str(path), "--results", str(tmp_path / "res")])
    assert res.exit_code == 2
    assert "lmms:pope_locl: unknown lmms-eval task; close matches: lmms:pope_local" in res.output
    assert not (tmp_path / "res" / store.RUNS_FILE).exists()
