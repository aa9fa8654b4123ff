"""The SFT stage: `transformers.Trainer` on chat examples, loss on the answer tokens only.

The stage trains whatever the strategy left trainable; it never decides which parameters train.
"""

from __future__ import annotations

from pathlib import Path

from mllmtune.data import ChatCollator
from mllmtune.stages import loop
from mllmtune.stages.loop import Cancelled

__all__ = ["Cancelled", "ListDataset", "run_sft"]


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
    resume_from: str | None = None,
) -> dict:
    """Train `model` in place on `examples`; returns a summary (steps, losses, samples/s) for the record.

    `optimizer`, when given, replaces the Trainer's default AdamW (for strategies with their own parameter groups,
    e.g. LoRA+); the learning-rate schedule still follows `stage`. Raises `Cancelled` (with the checkpoint
    saved at the interruption) on SIGINT/SIGTERM, and `FloatingPointError` on a NaN or infinite loss.
    `resume_from` continues from such a checkpoint: weights, optimizer, schedule and data order.
    """
    loop.check_trainable(model)
    args = loop.training_args(
        stage,
        output_dir,
        seed,
        progress,
        train_sampling_strategy="group_by_length" if stage.group_by_length else "random",
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=ListDataset(examples),
        data_collator=ChatCollator(processor),
        callbacks=loop.callbacks(progress, label) + list(extra_callbacks),
        optimizers=(optimizer, None),
    )
    return loop.run(trainer, output_dir, progress, resume_from)
