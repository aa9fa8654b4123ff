"""A plain `transformers.Trainer` SFT script: the baseline `mllmtune perf` holds the suite's SFT stage against.

No mllmtune training code runs here: the model and processor come from `from_pretrained`, the collator is the few
lines below (the chat template, one processor call, the loss masked up to the assistant tag), and the strategies
are set by hand as `mllmtune perf` configures the suite's: `full` (all weights train), `freeze` (vision tower and
projector frozen) and `lora` (peft LoRA r=8, alpha=16 on every linear layer of the language model).

mllmtune is imported only for the data: standalone, the rows come from the built world
(`mllmtune.world.build.load_world_split`); under `mllmtune perf` the harness passes the very example dicts
(`prompt`, `answer`, `image`) the suite trains on, so both sides see the same examples in the same order.

    python benchmarks/perf/plain_trainer.py --model ~/.cache/mllmtune/world/v5-default/model --strategy lora
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer, TrainerCallback, TrainingArguments


def chat(example: dict) -> list[dict]:
    content = ([{"type": "image"}] if example.get("image") is not None else []) + [
        {"type": "text", "text": example["prompt"]}
    ]
    answer = [{"type": "text", "text": example["answer"]}]
    return [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]


class Collator:
    """Whole conversations through the processor at once; labels are the tokens after the last assistant tag."""

    def __init__(self, processor, response_tag: str = "<|assistant|>"):
        self.processor = processor
        self.tag = processor.tokenizer.convert_tokens_to_ids(response_tag)

    def __call__(self, batch: list[dict]) -> dict:
        texts = [self.processor.apply_chat_template(chat(ex), tokenize=False) for ex in batch]
        images = [[ex["image"].convert("RGB")] for ex in batch] if batch[0].get("image") is not None else None
        self.processor.tokenizer.padding_side = "right"
        enc = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        ids = enc["input_ids"]
        positions = torch.arange(ids.shape[1]).expand_as(ids)
        last_tag = torch.where(ids == self.tag, positions, -1).max(dim=1, keepdim=True).values
        enc["labels"] = ids.masked_fill((positions <= last_tag) | (enc["attention_mask"] == 0), -100)
        return dict(enc)


def apply_strategy(model, strategy: str):
    if strategy == "full":
        model.requires_grad_(True)
    elif strategy == "freeze":
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith(("model.vision_tower.", "model.multi_modal_projector.")))
    elif strategy == "lora":
        from peft import LoraConfig, get_peft_model

        names = [
            n for n, m in model.named_modules() if n.startswith("model.language_model.") and type(m) is torch.nn.Linear
        ]
        model = get_peft_model(model, LoraConfig(target_modules=names, r=8, lora_alpha=16, task_type="CAUSAL_LM"))
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    return model


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def train(
    model_dir: str,
    rows: list[dict],
    strategy: str,
    steps: int,
    batch_size: int,
    seed: int,
    output_dir: str,
    learning_rate: float = 1e-4,
    callbacks: tuple = (),
) -> dict:
    """Train `steps` optimizer steps; returns the Trainer's metrics."""
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = apply_strategy(model, strategy)
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ListDataset(rows),
        data_collator=Collator(processor),
        callbacks=list(callbacks),
    )
    return trainer.train().metrics


class StepTimes(TrainerCallback):
    def __init__(self):
        self.stamps = []

    def on_train_begin(self, args, state, control, **kw):
        self.stamps = [time.perf_counter()]

    def on_step_end(self, args, state, control, **kw):
        self.stamps.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a saved model folder (e.g. the world's model/)")
    parser.add_argument("--strategy", default="full", choices=["full", "freeze", "lora"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="/tmp/plain-trainer")
    opts = parser.parse_args()
    from mllmtune.world.build import load_world_split  # data only

    question = "Which emotion does this evoke? Answer using one emotional category: {}"
    rows = load_world_split("emoscenes-photo", "train", opts.steps * opts.batch_size)
    rows = [dict(r, prompt=question.format(", ".join(r["labels"])), answer=r["label"]) for r in rows]
    timer = StepTimes()
    metrics = train(
        opts.model, rows, opts.strategy, opts.steps, opts.batch_size, opts.seed, opts.output_dir, callbacks=(timer,)
    )
    times = sorted(end - start for start, end in zip(timer.stamps, timer.stamps[1:], strict=False))
    median = times[len(times) // 2]
    print(f"{opts.strategy}: {metrics['train_samples_per_second']:.2f} samples/s, median step {median:.3f}s")


if __name__ == "__main__":
    main()
