"""`stage.release_freed_memory`: freed large blocks leave the process, and what is computed stays the same."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mllmtune.runtime import can_release_freed_memory

# Frees 2 MiB blocks that small live tensors sit between (the pattern of a training step's activations), then
# reports the resident memory still held over the start, and a checksum of a computation made of such blocks.
CHILD = """
import json, sys, torch
from mllmtune.perf.memory import rss_mb
from mllmtune.runtime import release_freed_memory
if sys.argv[1] == "release":
    assert release_freed_memory() is None
torch.manual_seed(0)
torch.ones(512, 1024).sum()  # a freed block: glibc serves blocks this large from its heap from now on
start = rss_mb()
big, small = [], []
for _ in range(100):
    big.append(torch.ones(512, 1024))  # 2 MiB, touched
    small.append(torch.ones(64, 64))  # 16 KiB, stays live between the big blocks
del big
held = rss_mb() - start
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
    default, released = _child("default"), _child("release")
    assert default["held_mb"] > 150, f"the heap kept only {default['held_mb']:.0f} MB of 200 MB freed"
    assert released["held_mb"] < 30, f"{released['held_mb']:.0f} MB stayed resident with release_freed_memory"
    assert released["checksum"] == default["checksum"]


@pytest.mark.parametrize("release", [False, True])
def test_the_sft_stage_applies_the_setting_before_training(bundle, tmp_path, monkeypatch, release):
    """The shared loop applies `release_freed_memory` (patched here: the real one is process-wide) and still trains."""
    from mllmtune import runtime
    from mllmtune.recipe import SFTStage
    from mllmtune.stages.sft import run_sft
    from mllmtune.world.build import pretrain_examples

    calls = []
    monkeypatch.setattr(runtime, "release_freed_memory", lambda: calls.append("released"))
    stage = SFTStage(max_steps=1, batch_size=2, logging_steps=1, release_freed_memory=release)
    summary = run_sft(bundle.model, bundle.processor, pretrain_examples()[:2], stage, tmp_path, 0)
    assert summary["steps"] == 1
    assert calls == (["released"] if release else [])
