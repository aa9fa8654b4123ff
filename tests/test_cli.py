"""The public CLI through typer's CliRunner: bad input exits 2 with one line; a full run lands a record."""

import json

import pytest
from typer.testing import CliRunner

from mllmtune.cli import app

runner = CliRunner()


def test_help_lists_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "train" in res.output and "eval" in res.output


def test_ls_strategies_json():
    res = runner.invoke(app, ["ls", "strategies", "--json"])
    rows = json.loads(res.output)
    assert {"full", "freeze"} <= {r["name"] for r in rows} and all(r["family"] for r in rows)


def test_bad_recipe_exits_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstrategy: {name: full}\nstage: {learning_rat: 1}\n")
    results = tmp_path / "results"
    res = runner.invoke(app, ["train", "--recipe", str(bad), "--results", str(results)])
    assert res.exit_code == 2
    assert "stage.learning_rat" in res.output and "Traceback" not in res.output
    assert not results.exists()


def test_missing_model_path_exits_2(tmp_path):
    res = runner.invoke(app, ["eval", "--model", str(tmp_path / "nope"), "--results", str(tmp_path / "r")])
    assert res.exit_code == 2 and "does not exist" in res.output and "network" in res.output


@pytest.mark.slow
def test_train_end_to_end_on_micro_world(micro_world, tmp_path):
    results = tmp_path / "results"
    args = [
        "train",
        "--recipe",
        "recipes/world/sft-freeze-vision.yaml",
        "--results",
        str(results),
        "--set",
        "stage.max_steps=3",
        "--set",
        "eval.limit=4",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    lines = (results / "runs.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    assert [r["stage"] for r in records] == ["zero-shot", "sft"]
    run = records[1]
    for key in (
        "schema_version",
        "run_id",
        "created_at",
        "status",
        "error",
        "recipe",
        "recipe_hash",
        "strategy",
        "family",
        "stage",
        "seed",
        "model",
        "trainable_params",
        "total_params",
        "wall_s",
        "peak_mem_mb",
        "scores",
        "provenance",
    ):
        assert key in run
    assert run["status"] == "success" and run["strategy"] == "freeze" and run["family"] == "selective"
    assert 0 < run["trainable_params"] < run["total_params"]
    assert set(run["scores"]) == {
        "emoscenes-photo@1",
        "emoscenes-art@1",
        "emoscenes-web@1",
        "world-general@2",
        "world-emotion-knowledge@1",
    }
    assert set(run["baseline_runs"]) == set(run["scores"])  # each baseline names the zero-shot run it came from
    assert all("accuracy" in m for m in run["scores"].values())
    assert run["train"]["steps"] == 3
    preds = results / "runs" / run["run_id"] / "predictions" / "emoscenes-photo@1.jsonl"
    assert len(preds.read_text().splitlines()) == 4
    assert "E " in res.output and "F " in res.output and "O " in res.output
    # a second run reuses the zero-shot baseline instead of scoring the base again
    res = runner.invoke(app, args + ["--set", "seed=1"])
    assert res.exit_code == 0, res.output
    stages = [json.loads(x)["stage"] for x in (results / "runs.jsonl").read_text().splitlines()]
    assert stages == ["zero-shot", "sft", "sft"]
