"""The SFT stage: `transformers.Trainer` on chat examples, loss on the answer tokens only.

The stage trains whatever the strategy left trainable; it never decides which parameters train.
"""

from __future__ import annotations

import math
from pathlib import Path

from mllmtune.data import ChatCollator


class ListDataset:
    """A map-style dataset over a list of example dicts (Trainer needs only `__len__` and `__getitem__`).

    `lengths` are cheap size estimates (characters, plus a fixed cost per image) for length-grouped batching:
    mixing long reasoning answers with short ones would otherwise pad most batches to the longest example.
    """

    IMAGE_COST = 200

    def __init__(self, rows: list[dict]):
        self.rows = rows
        self.lengths = [len(r["prompt"]) + len(r["answer"]) + (self.IMAGE_COST if r.get("image") else 0) for r in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def _trainer_class():
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class SuiteTrainer(Trainer):
        """Trainer that groups batches by our length estimates (Trainer infers lengths only for HF datasets)."""

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if self.args.train_sampling_strategy == "group_by_length" and isinstance(dataset, ListDataset):
                size = self.args.train_batch_size * self.args.gradient_accumulation_steps
                return LengthGroupedSampler(size, lengths=dataset.lengths)
            return super()._get_train_sampler(train_dataset)

    return SuiteTrainer


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


def run_sft(
    model,
    processor,
    examples: list[dict],
    stage,
    output_dir: Path,
    seed: int,
    progress=None,
    label: str = "sft",
    extra_callbacks: tuple = (),
    optimizer=None,
) -> dict:
    """Train `model` in place on `examples`; returns a summary (steps, losses, samples/s) for the record.

    `optimizer`, when given, replaces the Trainer's default AdamW (for strategies with their own parameter groups,
    e.g. LoRA+); the learning-rate schedule still follows `stage`.
    """
    import torch
    from transformers import TrainingArguments

    if not any(p.requires_grad for p in model.parameters()):
        from mllmtune.errors import UserError

        raise UserError("the strategy left no trainable parameter; check its groups")
    args = TrainingArguments(
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
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if stage.group_by_length else "random",
        dataloader_num_workers=0,
        disable_tqdm=progress is not None,
        activation_checkpointing=stage.gradient_checkpointing,
        use_cpu=not torch.cuda.is_available(),
    )
    callbacks = list(extra_callbacks)
    bar = _progress_callback(progress, label) if progress is not None else None
    if bar:
        callbacks.append(bar)
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=ListDataset(examples),
        data_collator=ChatCollator(processor),
        callbacks=callbacks,
        optimizers=(optimizer, None),
    )
    if progress is not None:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # the live display shows the loss; no raw dicts on stdout
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if losses and not math.isfinite(losses[-1]):
        raise FloatingPointError(f"training loss became {losses[-1]}")
    return {
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "samples_per_s": result.metrics.get("train_samples_per_second"),
        "train_runtime_s": result.metrics.get("train_runtime"),
    }
