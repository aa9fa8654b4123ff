"""A multi-process launch (`torchrun`, as `accelerate launch` does on GPUs): every process trains, one records.

Two CPU processes on the gloo backend stand in for two GPUs: the code path (process group, run id agreed between
processes, data split across them, only the main process scoring and writing) is the same.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

RECIPE = """\
# mllmtune train --recipe ddp.yaml
name: ddp-lora
seed: 0
model: {id: world}
data: {source: world, domain: photo, split: train, limit: 32}
strategy: {name: lora, r: 4}
eval: {target: [emoscenes-photo], retention: [world-general], limit: 8}
"""
STAGES = {
    "sft": ("stage: {name: sft, epochs: 1, batch_size: 4, learning_rate: 1.0e-3}", 32 // (2 * 4)),
    # EMO-R3 with reflection: each process asks its own policy; 2 steps of 4 completions (2 prompts x G 2) each
    "grpo": (
        "stage: {name: grpo, template: emo-r3, num_generations: 2, batch_size: 4, max_steps: 2, "
        "max_completion_length: 16, rewards: {accuracy: 0.8, format: 0.1, coherence: 0.05, consistency: 0.05}}",
        2,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_two_processes_train_one_run_and_write_one_record(micro_world, tmp_path, stage):
    text, steps = STAGES[stage]
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(RECIPE + text + "\n")
    results = tmp_path / "results"
    # --standalone: a rendezvous on a free port, so a launch right after another never meets a port still closing
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    # each rank's stderr also lands in its own file, so a failure shows the rank that failed first, not the launcher
    command += ["--log-dir", str(tmp_path / "ranks"), "--tee", "3", "-m", "mllmtune", "train"]
    done = subprocess.run(
        [*command, "--recipe", str(recipe), "--results", str(results)], capture_output=True, text=True, timeout=600
    )
    ranks = "".join(f"\n--- {p}\n{p.read_text()[-3000:]}" for p in sorted((tmp_path / "ranks").rglob("stderr.log")))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:] + ranks
    records = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["stage"] for r in records) == sorted([stage, "zero-shot"])
    assert all(r["status"] == "success" and r["provenance"]["world_size"] == 2 for r in records)
    run = next(r for r in records if r["stage"] == stage)
    assert run["train"]["steps"] == steps  # SFT: each step takes 4 examples on each of the 2 processes
    assert sorted(p.name for p in (results / "runs").iterdir()) == sorted(r["run_id"] for r in records)
    assert done.stdout.count("ddp-lora: lora") == 1  # one summary, from the main process


def test_train_leaves_its_process_group_before_exit(tmp_path, monkeypatch):
    """An undestroyed gloo group, torn down at interpreter exit, sometimes aborted a finished process."""
    import torch.distributed as dist

    from mllmtune.runtime import leave_process_group

    barriers, real_barrier = [], dist.barrier

    def barrier(*args, **kwargs):
        barriers.append(dist.is_initialized())
        return real_barrier(*args, **kwargs)

    monkeypatch.setattr(dist, "barrier", barrier)
    for wait in (False, True):  # after a failure it leaves at once; after success it meets the others first
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / f'store{wait}'}", rank=0, world_size=1)
        assert dist.is_initialized()
        leave_process_group(wait=wait)
        assert not dist.is_initialized()
        assert barriers == ([True] if wait else [])  # the barrier, only after success, and while the group lives
    leave_process_group(wait=True)  # and nothing to leave is no error
    assert barriers == [True]
