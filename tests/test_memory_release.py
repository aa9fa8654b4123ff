"""`stage.release_freed_memory`: freed large blocks leave the process, and what is computed stays the same."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mllmtune.runtime import can_release_freed_memory

# Frees 2 MiB blocks that live tensors sit between (the pattern of a training step's activations), then reports
# how much of them stayed resident, and a checksum of a computation made of such blocks.
CHILD = """
import json, sys, torch
from mllmtune.world.perf.memory import rss_mb
from mllmtune.runtime import keep_freed_memory, release_freed_memory
if sys.argv[1] in ("release", "release-then-keep"):
    assert release_freed_memory() is None
if sys.argv[1] == "release-then-keep":
    keep_freed_memory()
torch.manual_seed(0)
torch.ones(512, 1024).sum()  # a freed block: glibc serves blocks this large from its heap from now on
big, small = [], []
for _ in range(100):
    big.append(torch.ones(512, 1024))  # 2 MiB, touched
    small.append(torch.ones(128, 1024))  # 512 KiB (from the heap in every mode), stays live between the big blocks
before = rss_mb()
del big
held = 200 - (before - rss_mb())  # of the 200 MiB just freed, what stayed resident
w = torch.randn(1024, 1024)
x = torch.randn(512, 1024)
for _ in range(5):
    x = torch.tanh(x @ w) * 0.5
print(json.dumps({"held_mb": held, "checksum": float(x.double().sum())}))
"""


def _child(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not can_release_freed_memory(), reason="needs glibc's mallopt")
def test_released_blocks_leave_the_process_and_results_stay_the_same():
    default, released, kept = _child("default"), _child("release"), _child("release-then-keep")
    assert default["held_mb"] > 150, f"the heap kept only {default['held_mb']:.0f} MB of 200 MB freed"
    assert released["held_mb"] < 30, f"{released['held_mb']:.0f} MB stayed resident with release_freed_memory"
    assert kept["held_mb"] > 150, f"after keep_freed_memory the heap kept only {kept['held_mb']:.0f} MB"
    assert released["checksum"] == default["checksum"] == kept["checksum"]


@pytest.mark.parametrize(
    "release, four_bit, released",
    [(False, False, False), (True, False, True), (None, False, False), (None, True, True), (False, True, False)],
)
def test_the_sft_stage_releases_while_training_then_keeps(bundle, tmp_path, monkeypatch, release, four_bit, released):
    """The shared loop applies `release_freed_memory` (patched here: the real one is process-wide) for training only;
    unset, it follows `releases_by_default`."""
    from mllmtune import runtime
    from mllmtune.stages.sft import SFTStage, run_sft
    from mllmtune.world.build import pretrain_examples

    calls = []
    monkeypatch.setattr(runtime, "release_freed_memory", lambda: calls.append("released"))
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append("kept"))
    monkeypatch.setattr(runtime, "releases_by_default", lambda model: four_bit)
    stage = SFTStage(max_steps=1, batch_size=2, logging_steps=1, release_freed_memory=release)
    summary = run_sft(bundle.model, bundle.processor, pretrain_examples()[:2], stage, tmp_path, 0)
    assert summary["steps"] == 1 and summary["released_freed_memory"] is released
    assert calls == (["released", "kept"] if released else [])


def test_only_4bit_weights_on_cpu_release_by_default(bundle):
    from mllmtune import strategies
    from mllmtune.runtime import releases_by_default
    from mllmtune.strategies.qlora import fourbit_problem
    from mllmtune.world.build import pretrain_examples

    assert not releases_by_default(bundle.model)
    if why := fourbit_problem():
        pytest.skip(f"bitsandbytes 4-bit kernels unavailable here: {why}")
    spec = strategies.get("qlora")
    model = spec.build(bundle, spec.options.model_validate({"name": "qlora", "r": 4}), pretrain_examples()[:2])
    assert releases_by_default(model)
