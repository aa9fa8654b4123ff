"""`mllmtune perf --quick`: every figure lands in perf.csv with its median and spread, and the report shows them."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from mllmtune.cli import app

runner = CliRunner()
FIGURES = {
    "full suite/plain",
    "lora suite/plain",
    "freeze suite/plain",
    "lora suite samples/s",
    "full suite-plain batches+callbacks, share of a step",
    "lora suite batches+callbacks",
    "freeze plain batches+callbacks",
    "lora suite/plain forward+backward",
    "freeze largest step-loss gap, suite vs plain",
    "emo-r3/grpo",
    "reflective queries per completion",
    "reflection seconds per emo-r3 step",
    "reflection share of an emo-r3 step",
    "full train peak over imports",
    "lora/full",
    "qlora/lora",
    "qlora/lora, freed released",
    "qlora/lora, freed kept",
    "qlora train time/freed kept",
    "qlora/lora, THP allocations",
    "qlora train time, THP allocations/freed kept",
    "lora train time, freed released/freed kept",
    "--help minus python",
    "eval per 1,000 samples",
    "report per 10,000 records",
}


@pytest.mark.slow
def test_perf_quick_writes_every_figure_and_the_report_shows_it(micro_world, tmp_path):
    from tests.test_report import ZERO

    results = tmp_path / "results"
    res = runner.invoke(app, ["perf", "--quick", "--repeats", "1", "--results", str(results)])
    assert res.exit_code == 0, res.output
    with (results / "perf.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert FIGURES <= {r["figure"] for r in rows}
    for r in rows:
        assert float(r["min"]) <= float(r["median"]) <= float(r["max"]) and int(r["repeats"]) >= 1
    assert all(r["met"] in ("yes", "no", "unclear") for r in rows if r["target"])
    bounds = {r["figure"]: r["target"] for r in rows if r["figure"].startswith(("lora/full", "qlora/lora"))}
    assert len(bounds) == 8 and all(b == ("<= 0.5" if f.startswith("lora") else "<= 0.6") for f, b in bounds.items())
    assert all(float(r["ci_low"]) <= float(r["median"]) <= float(r["ci_high"]) for r in rows)
    gaps = {r["figure"]: float(r["max"]) for r in rows if "step-loss gap" in r["figure"]}
    assert len(gaps) == 3 and all(g == 0.0 for g in gaps.values()), (
        gaps
    )  # the suite trains exactly as the plain Trainer
    (results / "runs.jsonl").write_text(json.dumps(ZERO) + "\n")
    res = runner.invoke(app, ["report", "--results", str(results)])
    assert res.exit_code == 0, res.output
    assert "performance" in res.output and "emo-r3/grpo" in res.output
    md = (results / "report" / "report.md").read_text()
    assert "## Performance" in md and "| sft | full suite/plain |" in md


def test_perf_rejects_an_unknown_section(tmp_path):
    res = runner.invoke(app, ["perf", "--only", "nope", "--results", str(tmp_path)])
    assert res.exit_code == 2 and "unknown section" in res.output


def test_a_memory_child_does_not_inherit_its_parents_peak():
    """Linux carries ru_maxrss across exec from the forked parent; the child's peak must be its own."""
    import subprocess
    import sys

    held = bytearray(400 << 20)  # 400 MB, touched, resident in this (the parent) process
    held[::4096] = b"\x01" * len(held[::4096])
    code = "from mllmtune.world.perf.memory import peak_mb; print(peak_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert child < 300, f"child peak {child:.0f} MB: the parent's 400 MB leaked into it"
    del held


def test_an_overhead_child_rebuilds_the_rows_its_parent_measured_on(tmp_path, monkeypatch):
    """Each SFT side runs in its own interpreter; it must train on the parent's examples, in the same order."""
    from mllmtune.world.perf import common

    monkeypatch.setenv("MLLMTUNE_HOME", str(tmp_path / "home"))  # no built world: rows are rendered
    monkeypatch.setattr(common, "random_model", lambda folder, size, rows: folder)
    from mllmtune.world.perf.overhead import SFTSizes, child_args, child_setup

    parent = common.prepare(tmp_path, "micro", 6, 3)
    sizes = SFTSizes(steps=3, warmup=1)
    setup, child_sizes = child_setup(json.loads(child_args(parent, "lora", "suite", sizes, seed=0)))
    assert setup.model_dir == parent.model_dir and child_sizes == sizes
    child = setup.train_rows
    assert [(r["prompt"], r["answer"], r["description"]) for r in child] == [
        (r["prompt"], r["answer"], r["description"]) for r in parent.train_rows
    ]
    assert parent.size_name == "micro" and "not built" in parent.source


def test_a_memory_child_loads_the_base_in_the_dtype_it_is_given(micro_world):
    """`--memory-dtype` reaches the child: its base (and so LoRA's frozen weights) is loaded in that dtype."""
    from mllmtune.world.perf.memory import run_child

    out = {d: run_child(micro_world.model_dir, "lora", 1, 2, d) for d in ("float32", "bfloat16")}
    assert [out[d]["dtype"] for d in out] == ["float32", "bfloat16"]
    assert out["float32"]["param_dtype"] == "torch.float32"
    assert out["bfloat16"]["param_dtype"] == "torch.bfloat16"
    assert out["bfloat16"]["train_peak_mb"] > out["bfloat16"]["import_mb"] > 0


def test_each_heap_setting_reaches_its_memory_child(micro_world, monkeypatch):
    """THP allocations are PyTorch's environment setting, the release is the stage's; the default and kept children
    have neither, even under a shell that exports the THP setting (the default releases only 4-bit weights on CPU)."""
    from mllmtune.world.perf.memory import HEAPS, run_child

    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")
    out = {h: run_child(micro_world.model_dir, "lora", 1, 2, "float32", h) for h in HEAPS}
    assert {h: (r["thp"], r["release"]) for h, r in out.items()} == {
        "default": (False, False),
        "kept": (False, False),
        "thp": (True, False),
        "released": (False, True),
    }


def test_perf_rejects_an_unknown_memory_dtype(tmp_path):
    res = runner.invoke(app, ["perf", "--memory-dtype", "fp8", "--results", str(tmp_path)])
    assert res.exit_code == 2 and "--memory-dtype" in res.output and "bfloat16" in res.output


def test_the_perf_table_doctests_hold():
    import doctest

    from mllmtune.report import perf as table

    result = doctest.testmod(table)
    assert result.attempted >= 2 and result.failed == 0


@pytest.mark.parametrize(
    ("n", "ranks", "coverage"),
    [(1, (1, 1), 0.0), (3, (1, 3), 0.75), (5, (1, 5), 0.9375), (6, (1, 6), 0.96875), (9, (2, 8), 0.9609375),
     (20, (6, 15), 0.9586105346679688)],
)  # fmt: skip
def test_the_median_interval_takes_the_narrowest_order_statistics_that_hold_95_percent(n, ranks, coverage):
    from mllmtune.report.perf import median_interval

    values = [10.0 * i for i in range(n, 0, -1)]  # descending: the function must sort
    low, high, level = median_interval(values)
    assert (low, high) == (10.0 * ranks[0], 10.0 * ranks[1])
    assert level == pytest.approx(coverage)


def test_the_median_interval_holds_its_level_on_draws():
    """Over many samples of 9 from a skewed distribution, the interval holds the true median about 96% of the time."""
    import numpy as np

    from mllmtune.report.perf import median_interval

    rng = np.random.default_rng(0)
    true_median = np.log(2)  # exponential(1)
    hits = [lo <= true_median <= hi for lo, hi, _ in (median_interval(rng.exponential(size=9)) for _ in range(4000))]
    assert np.mean(hits) == pytest.approx(0.961, abs=0.015)


def test_met_says_unclear_when_the_interval_straddles_the_target():
    from mllmtune.report.perf import Row

    below, around, above = [0.9, 0.95, 1.0], [0.95, 1.0, 1.1], [1.06, 1.2, 1.3]
    assert [Row("sft", "x", "x", v, 1.05).cells()["met"] for v in (below, around, above)] == ["yes", "unclear", "no"]
    cells = Row("sft", "x", "x", around, 1.05).cells()
    interval = (cells["ci_low"], cells["ci_high"], cells["ci_level"], cells["values"])
    assert interval == ("0.95", "1.1", "0.75", "0.95 1 1.1")
    assert Row("growth", "x", "s", around).cells()["met"] == ""


def test_the_report_reads_a_perf_csv_written_before_the_intervals(tmp_path):
    from mllmtune.report.perf import report_markdown

    (tmp_path / "perf.csv").write_text(
        "section,figure,unit,median,min,max,repeats,target,met,note\n"
        "sft,full suite/plain,x,1.01,0.9,1.2,3,<= 1.05,yes,\n"
    )
    md = report_markdown(tmp_path)
    assert "| sft | full suite/plain | 1.010 | 0.900–1.200 | 0.900–1.200 | x | <= 1.05 | yes |" in md


def test_step_parts_splits_every_step_and_puts_the_trainer_back(tmp_path):
    import torch
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import CallbackHandler

    from mllmtune.world.perf.common import step_parts, step_timer

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def forward(self, x, labels=None):
            return {"loss": ((self.w(x).squeeze(-1) - labels) ** 2).mean()}

    rows = [{"x": torch.randn(2), "labels": torch.tensor(float(i % 2))} for i in range(8)]
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=4, report_to="none", use_cpu=True
    )
    originals = (Trainer.training_step, Trainer.get_batch_samples, CallbackHandler.call_event)
    with step_parts() as (totals, losses):
        timer = step_timer(totals)
        Trainer(model=Tiny(), args=args, train_dataset=rows, callbacks=[timer]).train()
    assert (Trainer.training_step, Trainer.get_batch_samples, CallbackHandler.call_event) == originals
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    parts = timer.steady_parts(1)
    assert set(parts) == {"data", "compute", "callbacks"} and all(len(v) == 3 for v in parts.values())
    steps = timer.steady(1)
    for i, step in enumerate(steps):  # the parts of a step fit inside it
        assert 0 < sum(parts[k][i] for k in parts) <= step
    assert all(v > 0 for v in totals.values())


def test_loss_gap():
    import math

    from mllmtune.world.perf.overhead import loss_gap

    assert loss_gap([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert loss_gap([1.0, 2.0], [1.0, 2.5]) == 0.5
    assert loss_gap([1.0], [1.0, 2.0]) == math.inf
