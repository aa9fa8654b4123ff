"""Peak memory of `full`, `lora` and `qlora` SFT steps: one fresh subprocess per strategy, heap setting and repeat.

A process's peak RSS cannot be lowered once reached, so each measurement runs alone:
`python -m mllmtune.world.perf.memory MODEL_DIR STRATEGY STEPS BATCH [DTYPE [on|off]]` prints one JSON line with

- `dtype`: what the base was loaded in (`float32` unless DTYPE says otherwise) and `param_dtype`, what its first
  floating parameter holds once the strategy is applied (QLoRA's reads float32 whatever the base: peft casts what
  stays unquantized to float32);
- `import_mb`: RSS after importing torch, transformers, peft and bitsandbytes (what every strategy pays alike);
- `loaded_mb`: RSS once the model is loaded and the strategy applied (`load_bundle` + the registry's `build`, as
  `mllmtune train` does; QLoRA re-loads the base in 4-bit there);
- `load_peak_mb`: the peak up to that point (QLoRA holds the fp32 and the 4-bit copy at once while re-loading);
- `train_peak_mb`: the peak during the SFT steps alone (the kernel's high-water mark is reset first through
  /proc/self/clear_refs; where that is refused it is the whole process's peak);
- `train_s`: the seconds those steps took (with `release`, what handing freed memory back costs);
- `release`: whether the stage released freed memory (`release_freed_memory`: freed blocks of 1 MiB or more go back
  to the system instead of staying resident in glibc's heap); without on|off, the stage's default decides (on for
  `qlora` on CPU);
- `thp`: whether the child ran with `THP_MEM_ALLOC_ENABLE=1`, PyTorch's own setting that gives CPU tensors of 2 MB
  or more 2 MB-aligned memory advised for transparent huge pages (read once, when PyTorch first allocates, so it
  is set in the child's environment).

Each strategy is measured under every heap setting of `HEAPS`: the suite's defaults, then each setting for all
three strategies alike.

The targets use `train_peak_mb - import_mb`: the memory the model and its training hold (weights, gradients,
optimizer state, activations), without the interpreter and libraries every strategy shares.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MEM_STRATEGIES = {
    "full": {"name": "full"},
    "lora": {"name": "lora", "groups": ["language"], "r": 8, "alpha": 16},
    "qlora": {"name": "qlora", "groups": ["language"], "r": 8, "alpha": 16},
}


@dataclass(frozen=True)
class Heap:
    """How a memory child's heap is set up: figure-name suffix, the stage's release setting (None: the stage's
    default), extra environment."""

    suffix: str
    release: bool | None = False
    env: dict = field(default_factory=dict)


_NO_THP = {"THP_MEM_ALLOC_ENABLE": "0"}  # PyTorch's default, whatever the calling shell exports
HEAPS = {
    "default": Heap("", release=None, env=_NO_THP),  # what `mllmtune train` does: qlora on CPU releases
    "kept": Heap(", freed kept", env=_NO_THP),  # glibc's heap as it comes, for every strategy
    "thp": Heap(", THP allocations", env={"THP_MEM_ALLOC_ENABLE": "1"}),
    "released": Heap(", freed released", release=True, env=_NO_THP),
}


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_mb() -> float:
    """This process's peak RSS since exec (or since `reset_peak`).

    Not `getrusage`'s ru_maxrss: Linux carries that across exec from the forked copy of the parent, so a child of a
    1.4 GB harness started with a 1.4 GB "peak" (found when every strategy's load peak read the same 1394 MB).
    """
    peak = _status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if math.isnan(peak) else peak  # no /proc


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def measure(
    model_dir: str, strategy: str, steps: int, batch_size: int, dtype: str = "float32", release: bool | None = None
) -> dict:
    """In this process: import, load in `dtype`, apply `strategy`, train `steps` SFT steps; the memory marks."""
    import gc
    import time

    from mllmtune.runtime import setup

    setup()
    import bitsandbytes  # noqa: F401  (every child imports the same libraries, so import_mb is comparable)
    import peft  # noqa: F401
    import transformers  # noqa: F401

    from mllmtune import strategies
    from mllmtune.models.bundle import load_bundle
    from mllmtune.stages.sft import SFTStage, run_sft
    from mllmtune.world.perf.common import rendered_rows

    rows = rendered_rows("train", steps * batch_size)
    gc.collect()
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"
    out = {"strategy": strategy, "dtype": dtype, "thp": thp, "import_mb": rss_mb()}
    bundle = load_bundle(model_dir, dtype=dtype)
    spec = strategies.get(strategy)
    options = spec.options.model_validate(MEM_STRATEGIES[strategy])
    bundle.model = spec.build(bundle, options, rows)
    out["param_dtype"] = str(next(p.dtype for p in bundle.model.parameters() if p.is_floating_point()))
    gc.collect()
    out |= {"loaded_mb": rss_mb(), "load_peak_mb": peak_mb()}
    out["peak_reset"] = reset_peak()
    stage = SFTStage(
        max_steps=steps, batch_size=batch_size, learning_rate=1e-4, logging_steps=steps, release_freed_memory=release
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = run_sft(bundle.model, bundle.processor, rows, stage, Path(tmp), 0, progress=None, label=strategy)
        out["train_s"] = time.perf_counter() - start
    out["release"] = summary["released_freed_memory"]
    out["train_peak_mb"] = peak_mb()
    return out


def run_child(
    model_dir: Path,
    strategy: str,
    steps: int,
    batch_size: int,
    dtype: str = "float32",
    heap: str = "default",
    timeout: float = 900,
) -> dict:
    """One measurement in a fresh interpreter (a process's peak RSS cannot be lowered once reached)."""
    from mllmtune.world.perf.common import run_child as child

    setting = HEAPS[heap]
    args = [str(model_dir), strategy, str(steps), str(batch_size), dtype]
    args += [] if setting.release is None else ["on" if setting.release else "off"]
    return child("mllmtune.world.perf.memory", args, timeout, env={"TQDM_DISABLE": "1"} | setting.env)


def memory_figures(
    model_dir: Path, repeats: int, steps: int, batch_size: int, log=print, dtype: str = "float32"
) -> dict[tuple[str, str], list[dict]]:
    """Per (strategy, heap setting of `HEAPS`), one child result per repeat (the base loaded in `dtype`); QLoRA is
    skipped (with a note) where 4-bit kernels are missing, and the release where glibc's mallopt is."""
    from mllmtune.runtime import RELEASE_UNSUPPORTED, can_release_freed_memory
    from mllmtune.strategies.qlora import fourbit_problem

    problem = fourbit_problem()
    if problem:
        log(f"memory: qlora skipped ({problem})")
    heaps = list(HEAPS)
    if not can_release_freed_memory():
        log(f"memory: release_freed_memory skipped ({RELEASE_UNSUPPORTED})")
        heaps = [h for h in heaps if not HEAPS[h].release]
    out: dict[tuple[str, str], list[dict]] = {}
    for _ in range(repeats):  # repeats outermost: a drift of the machine's speed touches every setting alike
        for heap in heaps:
            for name in MEM_STRATEGIES:
                if name == "qlora" and problem:
                    continue
                out.setdefault((name, heap), []).append(run_child(model_dir, name, steps, batch_size, dtype, heap))
    return out


if __name__ == "__main__":
    model, strategy, n_steps, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    dtype = sys.argv[5] if len(sys.argv) > 5 else "float32"
    release = {"on": True, "off": False}[sys.argv[6]] if len(sys.argv) > 6 else None
    print(json.dumps(measure(model, strategy, n_steps, batch, dtype, release)), flush=True)
