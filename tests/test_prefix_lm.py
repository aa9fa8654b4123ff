"""PaliGemma is a prefix LM: image and prompt attend both ways, the answer causally (`token_type_ids` 1 marks the
answer, "suffix", in its processor and model). A collated answer marked as prefix would let each answer token see the
token it is trained to predict."""

from __future__ import annotations

from PIL import Image


def test_an_answer_token_never_sees_a_later_one():
    import torch
    from tiny_families import BUILDERS
    from transformers import AutoModelForImageTextToText

    from mllmtune.data.chat import ChatCollator

    torch.manual_seed(0)
    config, processor = BUILDERS["paligemma"]()
    model = AutoModelForImageTextToText.from_config(config).train()  # the prefix mask applies in training
    image = Image.new("RGB", (40, 40), (200, 30, 30))
    batch = ChatCollator(processor)([{"prompt": "Which emotion?", "answer": "joy joy sadness", "image": image}])
    answer = (batch["labels"][0] != -100).nonzero().flatten()
    assert len(answer) >= 3
    changed = {k: v.clone() for k, v in batch.items() if k != "labels"}
    last = answer[-1].item()
    changed["input_ids"][0, last] = (changed["input_ids"][0, last] + 1) % config.text_config.vocab_size
    with torch.no_grad():
        torch.manual_seed(1)
        before = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        torch.manual_seed(1)
        after = model(**changed).logits
    # every position before the last answer token predicts the same whatever that token is
    assert torch.allclose(before[0, :last], after[0, :last], atol=1e-6)
