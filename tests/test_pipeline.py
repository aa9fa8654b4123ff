"""The training path on the micro world: collator masking, module groups, strategies, evaluation."""

import pytest
import torch

from mllmtune.data.chat import ChatCollator
from mllmtune.stages.sft import SFTStage


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
    """Image rows, so every group lies on the loss's path: a frozen group that trained would show."""
    from mllmtune import strategies
    from mllmtune.stages.sft import run_sft
    from tests.test_strategies import examples

    strategy = strategies.get(options["name"])
    model = strategy.apply(bundle, strategy.options.model_validate(options))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    got = {bundle.group_of(n) for n, p in model.named_parameters() if p.requires_grad}
    assert got == trainable_groups

    run_sft(
        model,
        bundle.processor,
        examples(8),
        SFTStage(max_steps=2, batch_size=4, learning_rate=1e-2),
        "/tmp/mllmtune-test-sft",
        seed=0,
    )
    moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert not moved & frozen, f"frozen parameters changed: {sorted(moved & frozen)[:3]}"
    assert {bundle.group_of(n) for n in moved} == trainable_groups


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
    assert set(scores) == {"emoscenes-photo@1", "world-general@2"}
    photo = preds["emoscenes-photo@1"]
    assert len(photo) == 6 and all("output" in r for r in photo)
    # the stored per-sample correctness adds up to the score (what the outputs decide: the test below)
    assert scores["emoscenes-photo@1"]["accuracy"] == pytest.approx(100 * sum(r["correct"] for r in photo) / 6)
    assert scores["world-general@2"]["answer_nll"] > 0


def test_evaluation_scores_what_the_model_said(bundle, monkeypatch):
    """Every metric follows the outputs: even rows answer right, odd rows say "banana" (wrong and unparseable)."""
    from mllmtune.evaluation import runner

    def said(model, processor, examples, batch_size, max_new_tokens, on_batch=None, **sampling):
        return [ex["answer"] if i % 2 == 0 else "banana" for i, ex in enumerate(examples)]

    monkeypatch.setattr(runner, "generate", said)
    scores, preds = runner.evaluate(
        bundle.model, bundle.processor, ["emoscenes-photo", "world-general"], limit=6, batch_size=4
    )
    photo, rows = scores["emoscenes-photo@1"], preds["emoscenes-photo@1"]
    assert photo["accuracy"] == pytest.approx(50) and photo["parsed"] == pytest.approx(50)
    assert [r["correct"] for r in rows] == [True, False] * 3
    assert [r["pred"] is None for r in rows] == [False, True] * 3
    f1 = []  # per label: no false positives, so F1 = 2 TP / (2 TP + FN)
    for label in {r["answer"] for r in rows}:
        hit = sum(r["answer"] == label and i % 2 == 0 for i, r in enumerate(rows))
        miss = sum(r["answer"] == label and i % 2 == 1 for i, r in enumerate(rows))
        f1.append(2 * hit / (2 * hit + miss))
    assert photo["macro_f1"] == pytest.approx(100 * sum(f1) / len(f1))
    general, rows = scores["world-general@2"], preds["world-general@2"]
    assert general["accuracy"] == pytest.approx(50) and [r["correct"] for r in rows] == [True, False] * 3
    for part in {r["subset"] for r in rows}:
        mine = [i % 2 == 0 for i, r in enumerate(rows) if r["subset"] == part]
        assert general[f"accuracy/{part}"] == pytest.approx(100 * sum(mine) / len(mine)), part


@pytest.mark.parametrize("warmup, warned", [(0.05, True), (0.0, False)], ids=["warm-up", "none"])
def test_a_run_whose_schedule_never_trains_says_so(bundle, tmp_path, capsys, warmup, warned):
    """A one-step run under warm-up takes its only step at learning rate 0: the model must not change, and the run
    must say so; without warm-up the step trains and nothing is said."""
    from mllmtune import strategies
    from mllmtune.stages.sft import run_sft
    from tests.test_strategies import examples

    strategy = strategies.get("full")
    model = strategy.apply(bundle, strategy.options.model_validate({"name": "full"}))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stage = SFTStage(max_steps=1, batch_size=4, learning_rate=1e-2, warmup_ratio=warmup)
    run_sft(model, bundle.processor, examples(4), stage, tmp_path, seed=0)
    moved = any(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters())
    said = "keeps all 1 step(s) at 0" in capsys.readouterr().err
    assert (said, moved) == (warned, not warned)
