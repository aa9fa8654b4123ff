"""Interrupted runs leave a record and resume; a NaN loss stops a run as failed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mllmtune.cli import app
from mllmtune.stages.sft import SFTStage

ROOT = Path(__file__).parents[1]


def test_nan_loss_stops_training(bundle):
    from mllmtune.stages.sft import run_sft

    bundle.model.lm_head.register_forward_hook(lambda mod, inp, out: out * float("nan"))
    examples = [{"prompt": "which digit is written in the image?", "answer": "3", "image": None}] * 8
    stage = SFTStage(max_steps=5, batch_size=4, logging_steps=1)
    with pytest.raises(FloatingPointError, match=r"became non-finite \(.*\) at step 1"):
        run_sft(bundle.model, bundle.processor, examples, stage, "/tmp/mllmtune-test-nan", seed=0)


def _records(results: Path) -> list[dict]:
    path = results / "runs.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


GRPO_SMALL = ["stage.batch_size=4", "stage.num_generations=2", "stage.max_completion_length=8"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("recipe", "steps", "overrides"),
    [("recipes/world/sft-full.yaml", 600, ["stage.batch_size=2"]), ("recipes/world/rl/emo-r3.yaml", 40, GRPO_SMALL)],
    ids=["sft", "grpo"],
)
def test_sigint_records_cancelled_and_resume_succeeds(micro_world, tmp_path, recipe, steps, overrides):
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "mllmtune", "train", "--recipe", recipe, "--results", str(results)]
    for override in [f"stage.max_steps={steps}", "eval.limit=2", *overrides]:
        cmd += ["--set", override]
    env = dict(os.environ, MLLMTUNE_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not any(r["stage"] == "zero-shot" for r in _records(results)):  # training starts right after
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.2)
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    cancelled = _records(results)[-1]
    assert cancelled["status"] == "cancelled" and "SIGINT" in cancelled["error"], cancelled
    checkpoint = results / cancelled["artifacts"]["checkpoint"]  # stored relative to the results folder
    assert checkpoint.is_dir()
    stopped_at = int(checkpoint.name.split("-")[1])
    assert 0 < stopped_at < steps
    assert f"mllmtune train --resume {cancelled['run_id']}" in out

    res = CliRunner().invoke(app, ["train", "--resume", cancelled["run_id"], "--results", str(results)])
    assert res.exit_code == 0, res.output
    done = _records(results)[-1]
    assert done["status"] == "success" and done["run_id"] == cancelled["run_id"]
    assert done["train"]["steps"] == steps
    assert done["recipe_hash"] == cancelled["recipe_hash"]
    # a finished run cannot be resumed again
    res = CliRunner().invoke(app, ["train", "--resume", cancelled["run_id"], "--results", str(results)])
    assert res.exit_code == 2 and "already succeeded" in res.output


def test_a_signal_while_a_stage_sets_up_is_held_for_its_first_step():
    """SIGINT during the seconds a stage spends importing TRL and building its trainer is held, not raised: the
    guard then stops training at its first step end (with a checkpoint); a held signal no training takes ends the
    block as `Cancelled`."""
    from types import SimpleNamespace

    from mllmtune.stages import loop

    guard = SimpleNamespace(signal=None)
    before = signal.getsignal(signal.SIGINT)  # Python's handler, or SIG_IGN where the shell started us in background
    with pytest.raises(loop.Cancelled, match="interrupted by SIGINT"):
        with loop.held_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # a raised KeyboardInterrupt would leave the block here
    with loop.held_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        with loop._signals_to(guard):
            pass
    assert guard.signal == "SIGTERM"
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
