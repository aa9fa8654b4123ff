"""Examples, prompts and collators shared by training and evaluation.

An example is a plain dict: `prompt` (the user's text), `answer` (the target text), `image` (a PIL image or
None) and any metadata. Prompts always go through the processor's chat template, so the same code serves the
embedded world and real model families.
"""

from __future__ import annotations

from typing import Any

EMOTION_QUESTION = "Which emotion does this evoke? Answer using one emotional category: {labels}"


def emotion_prompt(labels: list[str]) -> str:
    return EMOTION_QUESTION.format(labels=", ".join(labels))


def messages(prompt: str, has_image: bool, answer: str | None = None) -> list[dict]:
    content: list[dict] = [{"type": "image"}] if has_image else []
    content.append({"type": "text", "text": prompt})
    chat = [{"role": "user", "content": content}]
    if answer is not None:
        chat.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return chat


def _images(batch: list[dict]) -> list | None:
    """One list of images per example (empty for text-only ones): the layout every supported family accepts.

    Gemma 3 and Idefics3 pair images with prompts only through this nesting; LLaVA and Qwen2-VL flatten it.
    """
    if all(ex.get("image") is None for ex in batch):
        return None
    return [[ex["image"].convert("RGB")] if ex.get("image") is not None else [] for ex in batch]


def prompt_texts(processor, batch: list[dict]) -> list[str]:
    """Each example's prompt rendered by the chat template, ending where the assistant's answer starts."""
    return [
        processor.apply_chat_template(
            messages(ex["prompt"], ex.get("image") is not None), add_generation_prompt=True, tokenize=False
        )
        for ex in batch
    ]


def encode_prompts(processor, batch: list[dict], padding_side: str = "left", texts: list[str] | None = None) -> dict:
    """Tokenize the prompts of a batch (with their images) ready for `generate`; `texts`: already rendered."""
    texts = texts if texts is not None else prompt_texts(processor, batch)
    processor.tokenizer.padding_side = padding_side
    images = _images(batch)
    # padding_side passed too: a processor's own default (InternVL's "left") overrides the tokenizer's attribute
    kwargs = dict(padding=True, padding_side=padding_side, return_tensors="pt")
    try:
        return processor(text=texts, images=images, **kwargs)
    except ValueError:
        if images is not None:
            raise
        # a processor that refuses text alone (PaliGemma's); its model reads text alone, as the template renders it
        return processor.tokenizer(texts, **kwargs)


class ChatCollator:
    """Builds `input_ids`, `labels` (loss on the answer only) and the image tensors for a batch.

    The prompt goes through the processor once (which expands image placeholders the way its family
    expects); the answer suffix, which holds no image, is tokenized on its own and appended. This keeps the
    prompt/answer boundary exact for any chat template, at the cost of one processor call per batch.
    """

    def __init__(self, processor, max_length: int = 1024):
        self.processor = processor
        self.max_length = max_length

    def __call__(self, batch: list[dict]) -> dict[str, Any]:
        import torch

        proc, tok = self.processor, self.processor.tokenizer
        prompts = prompt_texts(proc, batch)
        enc = encode_prompts(proc, batch, padding_side="right", texts=prompts)
        fulls = [
            proc.apply_chat_template(messages(ex["prompt"], ex.get("image") is not None, ex["answer"]), tokenize=False)
            for ex in batch
        ]
        if any(not full.startswith(prompt) for full, prompt in zip(fulls, prompts, strict=True)):
            raise ValueError("chat template renders the prompt differently with an answer; cannot mask labels")
        # One batched call for the answers (the fast tokenizer encodes a list in one pass).
        suffixes = tok(
            [full[len(prompt) :] for full, prompt in zip(fulls, prompts, strict=True)], add_special_tokens=False
        )["input_ids"]
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        seqs, labels = [], []
        for ids, n, suffix in zip(enc["input_ids"].tolist(), lengths, suffixes, strict=True):
            suffix = suffix[: max(1, self.max_length - n)]
            seqs.append(ids[:n] + suffix)
            labels.append([-100] * n + suffix)
        width = max(len(s) for s in seqs)
        pad = tok.pad_token_id
        out = dict(enc)
        out["input_ids"] = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
        out["attention_mask"] = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        out["labels"] = torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels])
        seq_width = enc["input_ids"].shape[1]
        for key, value in enc.items():  # per-token side inputs (token_type_ids, mm_token_type_ids): extend with 0
            if (
                key not in ("input_ids", "attention_mask")
                and hasattr(value, "shape")
                and value.dim() == 2
                and value.shape == (len(batch), seq_width)
            ):
                grown = torch.zeros((len(batch), width), dtype=value.dtype)
                for i, n in enumerate(lengths):
                    grown[i, :n] = value[i, :n]
                out[key] = grown
        if "token_type_ids" in out and _prefix_lm(proc):
            out["token_type_ids"][out["labels"] != -100] = 1  # the answer is the causal "suffix"
        return out


def _prefix_lm(processor) -> bool:
    """A prefix-LM processor (PaliGemma's): it takes the answer as `suffix` and marks it with `token_type_ids` 1, the
    part its model attends causally; 0 is the prefix (image and prompt), attended both ways."""
    import inspect

    return "suffix" in inspect.signature(type(processor).__call__).parameters
