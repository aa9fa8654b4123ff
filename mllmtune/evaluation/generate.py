"""How a model answers: greedy (or sampled) generation from chat prompts, and the answer NLL of references."""

from __future__ import annotations

import math
from collections.abc import Callable

from mllmtune.data.chat import ChatCollator, encode_prompts


def generate(
    model,
    processor,
    examples: list[dict],
    batch_size: int,
    max_new_tokens: int,
    on_batch: Callable[[int], None] | None = None,
    **sampling,
) -> list[str]:
    """Answers for `examples` (greedy unless `sampling` says otherwise), decoded without special tokens."""
    import torch

    model.eval()
    outputs: list[str] = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        enc = encode_prompts(processor, batch).to(model.device)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                pad_token_id=processor.tokenizer.pad_token_id,
                **({"do_sample": False} | sampling),
            )
        new = out[:, enc["input_ids"].shape[1] :]
        outputs += processor.batch_decode(new, skip_special_tokens=True)
        if on_batch:
            on_batch(len(batch))
    return outputs


def answer_nll(model, processor, examples: list[dict], batch_size: int) -> float:
    """Mean token cross-entropy of the reference answers: the cheap, model-agnostic forgetting signal."""
    import torch

    collate = ChatCollator(processor)
    total, tokens = 0.0, 0
    model.eval()
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size])
        batch = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in batch.items()}
        with torch.no_grad():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
        labels = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total += float(loss)
        tokens += int((labels != -100).sum())
    return total / tokens if tokens else math.nan
