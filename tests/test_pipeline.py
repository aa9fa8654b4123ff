"""The training path on the micro world: collator masking, module groups, strategies, evaluation."""

import pytest
import torch

from mllmtune.data import ChatCollator
from mllmtune.recipe import SFTStage


def test_collator_masks_everything_but_the_answer(bundle):
    from PIL import Image

    img = Image.new("RGB", (48, 48), "red")
    batch = [
        {"prompt": "what color is the square?", "answer": "red", "image": img},
        {"prompt": "a person sees rain. which emotion?", "answer": "sadness", "image": None},
    ]
    out = ChatCollator(bundle.processor)(batch)
    tok = bundle.processor.tokenizer
    assert out["input_ids"].shape == out["labels"].shape
    assert out["pixel_values"].shape[0] == 1  # one image in the batch
    for i, ex in enumerate(batch):
        kept = out["labels"][i][out["labels"][i] != -100]
        assert tok.decode(kept, skip_special_tokens=True).strip() == ex["answer"]
        assert tok.decode(kept)[-len("<|end|>") :] == "<|end|>"  # the model learns to stop
    image_id = bundle.model.config.image_token_index
    assert int((out["input_ids"] == image_id).sum()) == 36  # (48 / 8)^2 patches, CLS dropped


def test_groups_cover_every_parameter(bundle):
    names = [n for n, _ in bundle.model.named_parameters()]
    groups = {bundle.group_of(n) for n in names}
    assert groups == {"vision", "projector", "language", "lm_head"}
    assert all(bundle.group_of(n) is not None for n in names)


@pytest.mark.parametrize(
    "options, trainable_groups",
    [
        ({"name": "full"}, {"vision", "projector", "language", "lm_head"}),
        ({"name": "freeze", "groups": ["vision"]}, {"projector", "language", "lm_head"}),
        ({"name": "freeze", "groups": ["vision", "projector"]}, {"language", "lm_head"}),
    ],
)
def test_selective_strategies_train_exactly_their_groups(bundle, options, trainable_groups):
    from mllmtune import strategies

    strategy = strategies.get(options["name"])
    model = strategy.apply(bundle, strategy.options.model_validate(options))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    got = {bundle.group_of(n) for n, p in model.named_parameters() if p.requires_grad}
    assert got == trainable_groups
    examples = [{"prompt": "which digit is written in the image?", "answer": "3", "image": None}] * 8
    from mllmtune.stages.sft import run_sft

    run_sft(
        model,
        bundle.processor,
        examples,
        SFTStage(max_steps=2, batch_size=4, learning_rate=1e-2),
        "/tmp/mllmtune-test-sft",
        seed=0,
    )
    for n, p in model.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        if not p.requires_grad:
            assert not changed, f"frozen {n} changed"
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(before[n], p.detach())]
    assert moved, "no trainable parameter moved"


def test_freeze_last_k_language_layers(bundle):
    from mllmtune import strategies

    s = strategies.get("freeze")
    model = s.apply(bundle, s.options.model_validate({"name": "freeze", "groups": ["vision"], "train_last_k": 1}))
    last = bundle.num_language_layers() - 1
    for n, p in model.named_parameters():
        if bundle.group_of(n) == "language":
            assert p.requires_grad == (bundle.language_layer_index(n) == last), n


def test_evaluation_scores_model_outputs(bundle):
    from mllmtune.evaluation.runner import evaluate

    scores, preds = evaluate(
        bundle.model, bundle.processor, ["emoscenes-photo", "world-general"], limit=6, batch_size=4
    )
    assert set(scores) == {"emoscenes-photo@1", "world-general@1"}
    photo = preds["emoscenes-photo@1"]
    assert len(photo) == 6 and all("output" in r for r in photo)
    # accuracy is recomputed from the stored per-sample correctness, never from labels alone
    assert scores["emoscenes-photo@1"]["accuracy"] == pytest.approx(100 * sum(r["correct"] for r in photo) / 6)
    assert scores["world-general@1"]["answer_nll"] > 0
