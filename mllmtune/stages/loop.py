"""The trainer loop every stage shares: arguments, live progress, clean stops on signals and non-finite losses.

A stage builds its trainer (`transformers.Trainer` or a TRL subclass) from `training_args(...)` and hands it to
`run(...)`; so interruption, resumption, NaN guards and the progress display behave the same in every stage.
"""

from __future__ import annotations

import math
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from mllmtune.config.fields import Strict, one_of

# Autocast precision of a stage's forward and backward; weights and optimizer stay float32.
Precision = Literal["no", "bf16", "fp16"]


# transformers' own scheduler names (`transformers.trainer_utils.SchedulerType`; copied so that validating a recipe
# does not import torch; tests/test_robust.py checks the copy against transformers).
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)


# Beyond these a recipe is a typo, not an experiment (10^7 steps of one second each are four months).
MAX_STEPS_BOUND = 10_000_000
MAX_EPOCHS_BOUND = 10_000

# Stage settings that change how memory is held, not what is computed: left out of the recipe hash, so runs that
# differ only in them compare as one configuration.
HASH_IGNORED_STAGE_KEYS = ("release_freed_memory",)


class TrainLoop(Strict):
    """What every stage's trainer loop shares (both stages run on `transformers.Trainer` arguments)."""

    epochs: float = Field(1.0, gt=0, le=MAX_EPOCHS_BOUND)
    max_steps: int = Field(-1, le=MAX_STEPS_BOUND, description="overrides epochs when > 0")
    learning_rate: float = Field(1e-4, gt=0, allow_inf_nan=False)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    lr_scheduler: str = Field("cosine", description="a transformers scheduler name")
    max_grad_norm: float = 1.0
    logging_steps: int = Field(10, ge=1)
    gradient_checkpointing: bool = False
    mixed_precision: Precision = Field(
        "no",
        description="autocast forward and backward in this precision, weights and optimizer stay float32; bf16 "
        "needs a GPU or a CPU with bf16 instructions (elsewhere it is emulated and slower)",
    )
    save_steps: int = Field(0, ge=0, description="also checkpoint every N steps (0: only when interrupted)")
    release_freed_memory: bool | None = Field(
        None,
        description="host memory under glibc (Linux): while training, hand every freed block of 1 MiB or more back "
        "to the system at once instead of keeping it in the heap. Default (null): on when the weights are 4-bit on "
        "CPU (strategy qlora there), off otherwise. On CPU (`mllmtune perf --only memory`, 150 M model, batch 4) it "
        "lowered the training peak of full / lora / qlora by 9 / 24 / 37% and made their steps 1.2 / 1.4 / 1.7x as "
        "long. Does not change what is computed",
    )

    @field_validator("lr_scheduler")
    @classmethod
    def _scheduler(cls, value: str) -> str:
        return one_of(value, SCHEDULERS, "unknown scheduler")


class Cancelled(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint (a KeyboardInterrupt: nothing swallows it)."""

    def __init__(self, signal_name: str, checkpoint: str | None):
        super().__init__(f"interrupted by {signal_name}")
        self.checkpoint = checkpoint


def _guard_callback():
    from transformers import TrainerCallback

    class Guard(TrainerCallback):
        """Stops cleanly: on a signal it saves a checkpoint at the next step end; when the trained weights (checked
        after every optimizer step) or a logged loss become non-finite it stops, and `run` fails the run."""

        def __init__(self):
            self.signal: str | None = None
            self.problem: str | None = None
            self._trained: list | None = None

        def on_step_end(self, args, state, control, model=None, **kw):
            if self.signal:
                control.should_save = True
                control.should_training_stop = True
            if model is not None and self.problem is None:
                bad = _non_finite(self._weights(model))
                if bad is not None:
                    self.problem = f"weights became non-finite ({bad}) at step {state.global_step}"
                    control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss) and self.problem is None:
                self.problem = f"training loss became non-finite ({loss}) at step {state.global_step}"
                control.should_training_stop = True

        def _weights(self, model) -> list:
            if self._trained is None:
                self._trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            return self._trained

    return Guard()


def _non_finite(named: list) -> str | None:
    """The name of the first parameter holding an inf or NaN, else None. One float32 sum per tensor and a single
    device sync: a pass over the trained weights, small beside a training step (on a sharded model each process
    checks its own shards)."""
    import torch

    if not named:
        return None
    with torch.no_grad():
        sums = torch.stack([p.detach().sum(dtype=torch.float32).to(named[0][1].device) for _, p in named])
        finite = torch.isfinite(sums)
        if bool(finite.all()):
            return None
        return named[int((~finite).nonzero()[0])][0]


def _schedule_callback(progress):
    """Says so when the learning-rate schedule keeps every step at 0 (a one-step run under warm-up trains nothing)."""
    from transformers import TrainerCallback

    class ScheduleCheck(TrainerCallback):
        def on_train_begin(self, args, state, control, lr_scheduler=None, **kw):
            factors = getattr(lr_scheduler, "lr_lambdas", None) or []
            # all() stops at the first step with a non-zero rate, so a normal run costs a step or two of lambdas
            if factors and state.max_steps > 0 and all(f(s) == 0 for f in factors for s in range(state.max_steps)):
                message = (
                    f"warning: the learning-rate schedule keeps all {state.max_steps} step(s) at 0 (warm-up takes "
                    "them), so nothing trains; set stage.warmup_ratio: 0 or train longer"
                )
                _warn(progress, message)

    return ScheduleCheck()


def _warn(progress, message: str) -> None:
    """One warning line: through the live display when there is one, else on stderr."""
    if progress is not None:
        progress.console.print(message, markup=False, highlight=False)
    else:
        import sys

        print(message, file=sys.stderr)


_HELD: list[str] = []  # signals that arrived while a stage was setting up (`held_signals`)


@contextmanager
def held_signals():
    """Hold SIGINT/SIGTERM while a stage sets up (imports, its trainer: seconds on a small model) instead of
    raising at once: training then stops at its first step end with a checkpoint, as for a signal during training.
    A signal that no training picked up ends the block with `Cancelled` (no checkpoint)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def hold(signum, frame):
        _HELD.append(signal.Signals(signum).name)

    handlers = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except BaseException:
        _HELD.clear()
        raise
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)
    if _HELD:
        name = _HELD[-1]
        _HELD.clear()
        raise Cancelled(name, None)


@contextmanager
def _signals_to(guard):
    """Route SIGINT/SIGTERM to `guard` while training (only possible in the main thread); a signal held while the
    stage set up stops training at its first step end."""
    handlers = {}

    def handle(signum, frame):
        guard.signal = signal.Signals(signum).name

    if _HELD:
        guard.signal = _HELD[-1]
        _HELD.clear()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)


def _progress_callback(progress, label: str):
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        """Drives a rich progress bar from the Trainer's steps and logs (loss, learning rate)."""

        def __init__(self):
            self.task = None
            self.losses: list[float] = []

        def on_train_begin(self, args, state, control, **kw):
            self.task = progress.add_task(label, total=state.max_steps, completed=state.global_step)

        def on_step_end(self, args, state, control, **kw):
            progress.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))
                progress.update(self.task, description=f"{label} loss {logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kw):
            progress.remove_task(self.task)

    return RichProgress()


def training_args(stage, output_dir: Path, seed: int, progress, args_class=None, **extra):
    """`TrainingArguments` (or a subclass such as TRL's `GRPOConfig`) from a stage's shared loop settings."""
    import torch

    from mllmtune.runtime import DISTRIBUTED_TIMEOUT_S

    if args_class is None:
        from transformers import TrainingArguments as args_class
    return args_class(
        output_dir=str(output_dir),
        per_device_train_batch_size=stage.batch_size,
        gradient_accumulation_steps=stage.grad_accum,
        num_train_epochs=stage.epochs,
        max_steps=stage.max_steps,
        learning_rate=stage.learning_rate,
        weight_decay=stage.weight_decay,
        warmup_steps=stage.warmup_ratio,
        lr_scheduler_type=stage.lr_scheduler,
        max_grad_norm=stage.max_grad_norm,
        logging_steps=stage.logging_steps,
        save_strategy="steps" if stage.save_steps else "no",
        save_steps=stage.save_steps or 500,
        save_total_limit=1,
        logging_nan_inf_filter=False,  # a NaN loss must reach the guard, not be hidden from the logs
        report_to="none",
        seed=seed,
        data_seed=seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=progress is not None,
        activation_checkpointing=stage.gradient_checkpointing,
        bf16=stage.mixed_precision == "bf16",
        fp16=stage.mixed_precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        ddp_timeout=DISTRIBUTED_TIMEOUT_S,
        **extra,
    )


def check_trainable(model) -> None:
    if not any(p.requires_grad for p in model.parameters()):
        from mllmtune.errors import UserError

        raise UserError("the strategy left no trainable parameter; check its groups")


def callbacks(progress, label: str) -> list:
    """The guard first (the loop reads it back), the schedule check, then the progress bar when there is a live
    display."""
    out = [_guard_callback(), _schedule_callback(progress)]
    if progress is not None:
        out.append(_progress_callback(progress, label))
    return out


def run(
    trainer, output_dir: Path, progress, resume_from: str | None = None, release_freed: bool | None = None
) -> dict:
    """Train; raises `Cancelled` (checkpoint saved) on SIGINT/SIGTERM and `FloatingPointError` when a loss or the
    trained weights become non-finite.

    `release_freed` is the stage's `release_freed_memory` (None: `runtime.releases_by_default`): while training,
    freed host memory goes back to the system."""
    from mllmtune import runtime

    guard = next(cb for cb in trainer.callback_handler.callbacks if hasattr(cb, "problem"))
    if release_freed is None and runtime.releases_by_default(trainer.model):
        release_freed = True
        _warn(
            progress,
            "note: 4-bit weights on CPU, so freed host memory goes back to the system while training "
            "(stage.release_freed_memory: false keeps it in the heap: faster steps, a higher peak)",
        )
    released = False
    if release_freed:
        problem = runtime.release_freed_memory()
        released = problem is None
        if problem:
            _warn(progress, f"warning: stage.release_freed_memory has no effect here ({problem})")
    if progress is not None:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # the live display shows the loss; no raw dicts on stdout
    try:
        with _signals_to(guard):
            result = trainer.train(resume_from_checkpoint=resume_from)
    finally:
        if released:  # evaluation, and later runs of the same process, use the heap as before
            runtime.keep_freed_memory()
    if guard.problem:
        raise FloatingPointError(f"{guard.problem}; stopped, nothing saved")
    if guard.signal:
        from transformers.trainer_utils import get_last_checkpoint

        raise Cancelled(guard.signal, get_last_checkpoint(str(output_dir)))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "samples_per_s": result.metrics.get("train_samples_per_second"),
        "train_runtime_s": result.metrics.get("train_runtime"),
        "released_freed_memory": released,
    }
