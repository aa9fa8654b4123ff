"""`mllmtune bench`: validation before anything runs, skipping done cells, failures recorded while the suite goes on.

Fast tests replace `mllmtune.runs.train.train` with a stand-in, so no model trains; one slow test runs a real
micro suite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mllmtune.cli import app
from mllmtune.config.recipe import Recipe, load_recipe
from mllmtune.fleet import bench
from mllmtune.runs import store

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent
FULL, FREEZE = REPO / "recipes/world/sft-full.yaml", REPO / "recipes/world/sft-freeze-vision.yaml"


def suite_file(tmp_path: Path, runs: list, **extra) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(
        json.dumps({"name": "t", "seeds": [0], "models": ["world"], "runs": runs, **extra})
    )  # JSON is YAML
    return path


def success(recipe: Recipe, run_id: str = "") -> store.RunRecord:
    return store.RunRecord(
        run_id=run_id or store.new_run_id(recipe.name),
        created_at=store.now_iso(),
        status="success",
        recipe=recipe.resolved(),
        recipe_hash=recipe.hash(),
        name=recipe.name,
        strategy=recipe.strategy.name,
        family="selective",
        stage=recipe.stage.name,
        seed=recipe.seed,
        model={"id": recipe.model.id, "revision": None},
        trainable_params=1,
        total_params=2,
        wall_s=1.0,
    )


@pytest.fixture()
def fake_train(monkeypatch):
    """Stand-in for run.train: records what it was asked to run; a recipe named in `fail` raises instead."""
    calls: list[str] = []
    fail: dict[str, BaseException] = {}

    def train(recipe, results, console):
        calls.append(recipe.name)
        if recipe.name in fail:
            raise fail[recipe.name]
        record = success(recipe)
        store.append_record(results, record)
        return record

    monkeypatch.setattr("mllmtune.runs.train.train", train)
    monkeypatch.setattr("mllmtune.runtime.setup", lambda: None)  # no torch import in fast tests
    return calls, fail


def records(results: Path) -> list[dict]:
    return store.read_records(results)[0]


def test_dry_run_lists_a_done_cell_as_skipped(tmp_path, fake_train):
    results = tmp_path / "results"
    done = load_recipe(FULL, ["seed=0", 'model.id="world"'])
    store.append_record(results, success(done, run_id="done-before"))
    suite = suite_file(tmp_path, [str(FULL), {"recipe": str(FREEZE), "set": ["stage.epochs=1"]}])
    res = runner.invoke(app, ["bench", str(suite), "--dry-run", "--results", str(results)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert any("sft-full" in x and "skip" in x and "done-before" in x for x in lines), res.output
    assert any("sft-freeze" in x and " run " in x for x in lines), res.output
    assert "1 to run, 1 skipped" in res.output and "dry run" in res.output
    assert fake_train[0] == [] and len(records(results)) == 1


def test_bench_skips_done_cells_and_resumes(tmp_path, fake_train):
    calls, _ = fake_train
    results = tmp_path / "results"
    suite = suite_file(tmp_path, [str(FULL), str(FREEZE)], seeds=[0, 1])
    assert runner.invoke(app, ["bench", str(suite), "--results", str(results), "--only", "freeze"]).exit_code == 0
    assert calls == ["sft-freeze-vision"] * 2
    res = runner.invoke(app, ["bench", str(suite), "--results", str(results)])
    assert res.exit_code == 0, res.output
    assert calls == ["sft-freeze-vision"] * 2 + ["sft-full"] * 2  # only what was missing
    assert "ran 2 · skipped 2 · failed 0" in res.output


def test_every_bad_recipe_is_listed_at_once_and_nothing_runs(tmp_path, fake_train):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nstrategy: {name: full}\nstage: {learning_rat: 1}\n")
    results = tmp_path / "results"
    suite = suite_file(tmp_path, [str(FULL), str(tmp_path / "missing.yaml"), str(bad)], seeds=[0, 1])
    res = runner.invoke(app, ["bench", str(suite), "--results", str(results)])
    assert res.exit_code == 2, res.output
    assert "2 problem(s)" in res.output and "missing.yaml" in res.output and "stage.learning_rat" in res.output
    assert "Traceback" not in res.output
    assert fake_train[0] == [] and not results.exists()


def test_a_bad_suite_key_is_one_line_exit_2(tmp_path, fake_train):
    suite = suite_file(tmp_path, [str(FULL)], sedes=[1])
    res = runner.invoke(app, ["bench", str(suite), "--results", str(tmp_path / "r")])
    assert res.exit_code == 2 and "sedes" in res.output and fake_train[0] == []


def test_unwritable_results_is_one_line_before_any_training(tmp_path, fake_train):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    res = runner.invoke(app, ["bench", str(suite_file(tmp_path, [str(FULL)])), "--results", str(blocker / "results")])
    assert res.exit_code == 2 and "not writable" in res.output and "Traceback" not in res.output
    assert fake_train[0] == []


def test_a_failing_run_is_recorded_failed_and_the_suite_goes_on(tmp_path, fake_train):
    calls, fail = fake_train
    fail["sft-full"] = RuntimeError("boom")
    results = tmp_path / "results"
    res = runner.invoke(app, ["bench", str(suite_file(tmp_path, [str(FULL), str(FREEZE)])), "--results", str(results)])
    assert res.exit_code == 1, res.output  # the suite finished, but says something failed
    assert calls == ["sft-full", "sft-freeze-vision"]
    by_name = {r["name"]: r for r in records(results)}
    assert by_name["sft-full"]["status"] == "failed" and by_name["sft-full"]["error"] == "RuntimeError: boom"
    assert by_name["sft-full"]["recipe_hash"] == load_recipe(FULL, ['model.id="world"']).hash()
    assert by_name["sft-freeze-vision"]["status"] == "success"
    assert "ran 1 · skipped 0 · failed 1" in res.output
    # A failed cell is not done: the next bench tries it again.
    fail.clear()
    assert runner.invoke(app, ["bench", str(tmp_path / "suite.yaml"), "--results", str(results)]).exit_code == 0
    assert calls[-1] == "sft-full" and len(calls) == 3


def test_a_failure_train_already_recorded_is_not_recorded_twice(tmp_path, monkeypatch):
    results = tmp_path / "results"

    def train(recipe, results, console):
        store.append_record(results, success(recipe).model_copy(update={"status": "failed", "error": "X: late"}))
        raise ValueError("late")

    monkeypatch.setattr("mllmtune.runs.train.train", train)
    monkeypatch.setattr("mllmtune.runtime.setup", lambda: None)
    out = bench.run_suite(suite_file(tmp_path, [str(FULL)]), results, bench.Console(file=open("/dev/null", "w")))
    assert out.count("failed") == 1
    assert [r["status"] for r in records(results)] == ["failed"]


def test_ctrl_c_stops_the_suite(tmp_path, fake_train):
    calls, fail = fake_train
    fail["sft-full"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        bench.run_suite(
            suite_file(tmp_path, [str(FULL), str(FREEZE)]), tmp_path / "r", bench.Console(file=open("/dev/null", "w"))
        )
    assert calls == ["sft-full"]


def test_quick_and_full_suites_parse():
    for name in ("quick", "full"):
        suite = bench.Suite.model_validate(
            __import__("yaml").safe_load((REPO / f"benchmarks/{name}.yaml").read_text())
        )
        assert suite.runs and suite.seeds == ([0] if name == "quick" else [0, 1, 2])


@pytest.mark.parametrize("path", sorted((REPO / "benchmarks").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_suite_validates(path, tmp_path):
    """Each suite's recipes load with their overrides (a misspelt key in a run's `set` fails here, not hours in)."""
    res = runner.invoke(app, ["bench", str(path), "--dry-run", "--results", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "dry run: nothing was run" in res.output


@pytest.mark.slow
def test_micro_suite_end_to_end_then_report(micro_world, tmp_path):
    results, out = tmp_path / "results", tmp_path / "report"
    suite = suite_file(tmp_path, [str(FULL), {"recipe": str(FREEZE), "set": ["stage.learning_rate=1e-3"]}])
    tiny = ["--set", "stage.max_steps=2", "--set", "eval.limit=4"]
    res = runner.invoke(app, ["bench", str(suite), "--results", str(results), *tiny])
    assert res.exit_code == 0, res.output
    assert [(r["stage"], r["status"]) for r in records(results)] == [("zero-shot", "success")] + [
        ("sft", "success")
    ] * 2
    again = runner.invoke(app, ["bench", str(suite), "--results", str(results), *tiny])
    assert again.exit_code == 0 and "ran 0 · skipped 2 · failed 0" in again.output
    res = runner.invoke(app, ["report", "--results", str(results), "--out", str(out)])
    assert res.exit_code == 0, res.output
    import pandas as pd

    lb = pd.read_csv(out / "leaderboard.csv")
    assert set(lb["recipe"]) == {"sft-full", "sft-freeze-vision", "zero-shot"}
    tuned = lb[lb["stage"] == "sft"]
    assert tuned[["E_lo", "E_hi", "F_lo", "F_hi", "O_lo", "O_hi"]].notna().all().all()  # predictions were paired
    assert ((tuned["E_lo"] <= tuned["E"]) & (tuned["E"] <= tuned["E_hi"])).all()


def test_seeds_option_replaces_the_suite_seeds(tmp_path, fake_train):
    calls, _ = fake_train
    suite = suite_file(tmp_path, [str(FULL)], seeds=[0, 1, 2])
    res = runner.invoke(app, ["bench", str(suite), "--results", str(tmp_path / "r"), "--seeds", "1"])
    assert res.exit_code == 0, res.output
    assert calls == ["sft-full"] and "ran 1 · skipped 0 · failed 0" in res.output
    bad = runner.invoke(app, ["bench", str(suite), "--seeds", "one"])
    assert bad.exit_code == 2 and "--seeds" in bad.output


def test_only_repeated_runs_every_recipe_any_pattern_matches(tmp_path, fake_train):
    calls, _ = fake_train
    suite = suite_file(tmp_path, [str(FULL), str(FREEZE)], seeds=[0])
    args = ["bench", str(suite), "--results", str(tmp_path / "r"), "--only", "full", "--only", "*freeze*"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert sorted(calls) == ["sft-freeze-vision", "sft-full"]
    none = runner.invoke(app, ["bench", str(suite), "--only", "nope", "--only", "never*"])
    assert none.exit_code == 2 and "'nope', 'never*'" in none.output
