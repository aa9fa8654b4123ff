"""The SFT stage: `transformers.Trainer` on chat examples, loss on the answer tokens only.

The stage trains whatever the strategy left trainable; it never decides which parameters train.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from mllmtune.data.chat import ChatCollator
from mllmtune.stages import loop
from mllmtune.stages.loop import Cancelled, TrainLoop

__all__ = ["Cancelled", "ListDataset", "SFTStage", "run_sft"]


class SFTStage(TrainLoop):
    name: Literal["sft"] = "sft"
    batching: Literal["random", "by_length", "length_buckets"] = Field(
        "random",
        description="random batches; by_length: transformers' length-grouped sampler (least padding, but on a "
        "mixed-task set each batch becomes one task, which hurt learning in the world's pretraining: loss 1.55 vs "
        "0.79 after 100 steps); length_buckets: random batches within buckets of similar length (the longest at "
        "most twice the shortest), so tasks of similar length still mix",
    )


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


def length_buckets(lengths: list[int], ratio: float = 2.0) -> list[list[int]]:
    """Indices grouped so that in each group the longest is at most `ratio` times the shortest (sorted by length)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    buckets: list[list[int]] = []
    for i in order:
        if not buckets or lengths[i] > ratio * lengths[buckets[-1][0]]:
            buckets.append([])
        buckets[-1].append(i)
    return buckets


class BucketSampler:
    """Random batches drawn within length buckets, in random order (hand-written: no maintained library offers a
    bucketed sampler for `Trainer`; transformers' `LengthGroupedSampler` sorts within mega-batches, which on a
    mixed-task set puts one task in each batch).

    Batches are drawn within one bucket, except the few made of the buckets' remainders. Draws from torch's global
    generator, which `Trainer` seeds, so the order repeats for a seed.

    The data loader cuts every `batch_size` indices and the remainders' short batch is shuffled in with the others,
    so every cut after it straddles two drawn batches (in the default world's build, 270 to 423 of 1344 batches hold
    two buckets, over four seeds). The world's base learned in this order, and the extra mixing is part of what it
    learned from: with the remainders put last and buckets by token counts, rebuilt bases stopped answering the
    image emotion question with a label (zero-shot photo 3.3% and 8.8% for two seeds over v4's tower, against 15.6%
    and 16.2% in this order). So the order stays until a world version is built and checked without it.
    """

    def __init__(self, lengths: list[int], batch_size: int):
        self.buckets, self.batch_size, self.n = length_buckets(lengths), batch_size, len(lengths)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        import torch

        batches, rest = [], []
        for bucket in self.buckets:
            shuffled = [bucket[i] for i in torch.randperm(len(bucket)).tolist()]
            full = len(shuffled) - len(shuffled) % self.batch_size
            batches += [shuffled[i : i + self.batch_size] for i in range(0, full, self.batch_size)]
            rest += shuffled[full:]
        batches += [rest[i : i + self.batch_size] for i in range(0, len(rest), self.batch_size)]
        for b in torch.randperm(len(batches)).tolist():
            yield from batches[b]


def _trainer_class(batching: str):
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class SuiteTrainer(Trainer):
        """Trainer that batches by our length estimates when asked (Trainer infers lengths only for HF datasets)."""

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            size = self.args.train_batch_size * self.args.gradient_accumulation_steps
            if batching == "by_length" and isinstance(dataset, ListDataset):
                return LengthGroupedSampler(size, lengths=dataset.lengths)
            if batching == "length_buckets" and isinstance(dataset, ListDataset):
                return BucketSampler(dataset.lengths, self.args.train_batch_size)
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
    saved at the interruption) on SIGINT/SIGTERM, and `FloatingPointError` when a loss or the trained weights become
    non-finite.
    `resume_from` continues from such a checkpoint: weights, optimizer, schedule and data order.
    """
    loop.check_trainable(model)
    args = loop.training_args(stage, output_dir, seed, progress)
    trainer = _trainer_class(stage.batching)(
        model=model,
        args=args,
        train_dataset=ListDataset(examples),
        data_collator=ChatCollator(processor),
        callbacks=loop.callbacks(progress, label) + list(extra_callbacks),
        optimizers=(optimizer, None),
    )
    return loop.run(trainer, output_dir, progress, resume_from, stage.release_freed_memory)
