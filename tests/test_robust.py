"""No traceback reaches a user, and no broken run is recorded as a success."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mllmtune.cli import app
from mllmtune.errors import UserError
from mllmtune.recipe import load_recipe

runner = CliRunner()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=-1", "seed: "),
        ("seed=4294967296", "seed: "),
        ("stage.lr_scheduler=cosine_wobble", "stage.lr_scheduler: unknown scheduler 'cosine_wobble'; known: "),
        ("stage.learning_rate=.inf", "stage.learning_rate: "),
        ("stage.learning_rate=.nan", "stage.learning_rate: "),
        ("data.split=validation", "data.split: the world has no split 'validation'; known: test, train"),
        ("eval.target=[]", "eval.target: "),
        ("stage.max_steps=1000000000000", "stage.max_steps: "),
        ("stage.epochs=1e12", "stage.epochs: "),
    ],
)
def test_validation_catches_what_training_would_die_on(override, message):
    with pytest.raises(UserError, match="^recipes/world/sft-full.yaml: " + message.replace(".", r"\.")):
        load_recipe("recipes/world/sft-full.yaml", [override])


@pytest.mark.parametrize("logging_steps", [1, 10])
def test_weights_that_go_non_finite_fail_the_run_at_that_step(micro_world, tmp_path, logging_steps):
    """A learning rate of 1e30 sends the weights to inf at the first step; the run must end failed, naming the step,
    whether or not a loss was logged at that step, with no traceback on the console."""
    results = tmp_path / "results"
    sets = [
        "stage.learning_rate=1e30",
        "stage.max_steps=3",
        "stage.warmup_ratio=0",
        f"stage.logging_steps={logging_steps}",
        "data.limit=32",
        "eval.limit=4",
    ]
    args = ["train", "--recipe", "recipes/world/sft-full.yaml", "--results", str(results)]
    res = runner.invoke(app, args + [x for s in sets for x in ("--set", s)])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    run = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()][-1]
    assert run["status"] == "failed", run["status"]
    assert "non-finite" in run["error"] and "step 1" in run["error"], run["error"]
    assert not run["artifacts"].get("model")
