"""What every perf measurement shares: the model and data it runs on, a per-step timer, and robust summaries.

The overhead figures run on the embedded world's base when that world is built; when it is not (its build takes
~20 minutes), on a random model of the same architecture and size, with the world's tokenizer recipe trained on the
rendered rows, so `mllmtune perf` never waits for the world build. The memory figures always use a random model of
`PERF_SIZE` (~150 M parameters): memory is a matter of shapes, not of trained weights.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mllmtune.world.model import SIZES, ModelSize

# A mid-sized model of the world's architecture for the memory figures: ~150 M parameters (language 10 x 1024).
PERF_SIZE = ModelSize(
    vocab=1200, vision_hidden=384, vision_layers=6, vision_heads=6, text_hidden=1024, text_layers=10, text_heads=16
)


@dataclass
class Setup:
    model_dir: Path
    source: str  # what the model is, for the table's notes
    train_rows: list[dict]
    test_rows: list[dict]
    size_name: str = "default"  # the world size the rows come from (`rows_for` rebuilds them in a child process)


def as_examples(rows: list[dict]) -> list[dict]:
    """World rows as training examples, exactly as `mllmtune train` builds them."""
    from mllmtune.world.data import as_examples

    return as_examples(rows)


def rendered_rows(split: str, n: int, seed: int = 0) -> list[dict]:
    """EmoScenes photo rows drawn on the fly (no world build needed)."""
    from mllmtune.world.general import emoscene_rows

    return as_examples(emoscene_rows("photo", split, n, seed))


def random_model(folder: Path, size: ModelSize, rows: list[dict], seed: int = 0) -> Path:
    """A random world-architecture model with a tokenizer trained on `rows`, saved for `from_pretrained`."""
    from mllmtune.emo_r3.template import STRUCTURED_INSTRUCTION
    from mllmtune.world.model import build_model, build_processor, train_tokenizer

    corpus = [STRUCTURED_INSTRUCTION] + [t for r in rows for t in (r["prompt"], r["answer"], r["description"])]
    tokenizer = train_tokenizer(corpus, size.vocab)
    processor = build_processor(tokenizer)
    model = build_model(tokenizer, size, seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def world_built(size_name: str) -> bool:
    from mllmtune.world.build import world_root

    return (world_root(size_name) / "build.json").is_file()


def rows_for(size_name: str, split: str, n: int) -> list[dict]:
    """The first `n` photo rows of a split: from the built world of `size_name`, else rendered on the fly."""
    from mllmtune.world.build import load_world_split

    if world_built(size_name):
        return as_examples(load_world_split("emoscenes-photo", split, n, size=size_name))
    return rendered_rows(split, n, seed=0 if split == "train" else 1)


def prepare(work: Path, size_name: str, n_train: int, n_test: int) -> Setup:
    """The model and rows of the overhead and growth figures: the built world of `size_name`, else a random twin."""
    from mllmtune.world.build import world_root

    train, test = rows_for(size_name, "train", n_train), rows_for(size_name, "test", n_test)
    if world_built(size_name):
        return Setup(world_root(size_name) / "model", f"world {size_name} (pretrained)", train, test, size_name)
    folder = random_model(work / f"random-{size_name}", SIZES[size_name], train)
    source = f"random {size_name}-size world-architecture model (world not built)"
    return Setup(folder, source, train, test, size_name)


def run_child(module: str, args: list[str], timeout: float = 900, env: dict | None = None) -> dict:
    """`python -m module *args` in a fresh interpreter; its last stdout line that is a JSON object.

    Measurements run in their own process so that none inherits another's allocator state, peak memory or warm
    caches. Raises with the child's last lines when it fails."""
    import json
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", module, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **(env or {})))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-5:])
        raise RuntimeError(f"{module} {' '.join(args)} failed (exit {proc.returncode}): {tail}")
    return json.loads(lines[-1])


def param_count(model_dir: Path) -> int:
    """Parameters stored in a saved model folder (read from the safetensors headers, nothing loaded)."""
    import math

    from safetensors import safe_open

    total = 0
    for path in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            total += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
    return total


def step_timer(parts: dict[str, float] | None = None):
    """A TrainerCallback that stamps every optimizer step's end; `steady(warmup)` gives the step times after warm-up.

    Step k's time runs from the end of step k-1 (or train begin) to the end of step k, so it holds the batch's
    loading and collation, forward, backward, optimizer and any callback work: everything a training step costs.
    Given the running totals of `step_parts`, it also splits each step (`steady_parts`).
    """
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.stamps: list[float] = []
            self.snapshots: list[dict[str, float]] = []

        def _stamp(self):
            self.stamps.append(time.perf_counter())
            self.snapshots.append(dict(parts or {}))

        def on_train_begin(self, args, state, control, **kw):
            self.stamps, self.snapshots = [], []
            self._stamp()

        def on_step_end(self, args, state, control, **kw):
            self._stamp()

        def steady(self, warmup: int) -> list[float]:
            times = [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
            return times[warmup:]

        def steady_parts(self, warmup: int) -> dict[str, list[float]]:
            pairs = list(zip(self.snapshots, self.snapshots[1:], strict=False))[warmup:]
            return {key: [b[key] - a[key] for a, b in pairs] for key in parts or {}}

    return StepTimer()


@contextmanager
def step_parts():
    """Running totals of where a Trainer's steps spend their time, and every micro-batch's loss, while inside.

    Yields `(totals, losses)`: `totals` holds the seconds in `data` (fetching and collating batches:
    `Trainer.get_batch_samples`), `compute` (forward and backward: `Trainer.training_step`) and `callbacks`
    (`CallbackHandler.call_event`); the rest of a step is the optimizer, the schedule and the loop itself. The
    methods are wrapped on their classes, so this is for a process that runs one measurement (a perf child).
    """
    from transformers import Trainer
    from transformers.trainer_callback import CallbackHandler

    totals = {"data": 0.0, "compute": 0.0, "callbacks": 0.0}
    losses: list[float] = []
    originals = {
        "data": (Trainer, "get_batch_samples", Trainer.get_batch_samples),
        "compute": (Trainer, "training_step", Trainer.training_step),
        "callbacks": (CallbackHandler, "call_event", CallbackHandler.call_event),
    }

    def timed(part, method):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                out = method(*args, **kwargs)
            finally:
                totals[part] += time.perf_counter() - start
            if part == "compute":
                losses.append(float(out))
            return out

        return wrapper

    for part, (owner, name, method) in originals.items():
        setattr(owner, name, timed(part, method))
    try:
        yield totals, losses
    finally:
        for owner, name, method in originals.values():
            setattr(owner, name, method)


@contextmanager
def loop_callback(callback):
    """Add `callback` to every trainer the stages build while inside (GRPO's stage takes no extra callbacks)."""
    from mllmtune.stages import loop

    original = loop.callbacks
    loop.callbacks = lambda progress, label: original(progress, label) + [callback]
    try:
        yield
    finally:
        loop.callbacks = original


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)
