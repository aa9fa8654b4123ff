"""Tests for the embedded world: cue model, renderers and general-knowledge rows."""

from __future__ import annotations

import collections
import json
import re

import numpy as np
import pytest

from mllmtune.world import general, scenes
from mllmtune.world.general import (
    CAPTION_QUESTION,
    STRUCTURED_INSTRUCTION,
    TASKS,
    digit_indices,
    emoscene_rows,
    general_rows,
    perturb_scene,
)
from mllmtune.world.render import render
from mllmtune.world.scenes import (
    DOMAIN_LATENTS,
    DOMAINS,
    LABELS,
    LATENT_TO_LABEL,
    bayes_accuracy,
    describe,
    polarity_arousal,
    sample_scene,
)

SMALL = {"vqa": 6, "caption": 8, "digits": 6, "emotion_text": 4, "describe": 4, "reasoning_text": 2}


def _pixels(rows: list[dict]) -> list[bytes | None]:
    return [None if r["image"] is None else r["image"].tobytes() for r in rows]


def _strip_images(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "image"} for r in rows]


def test_label_mapping_covers_every_label() -> None:
    for domain in DOMAINS:
        mapped = {LATENT_TO_LABEL[domain][x] for x in DOMAIN_LATENTS[domain]}
        assert mapped == set(LABELS[domain])
    assert "awe" not in DOMAIN_LATENTS["art"] and "surprise" not in DOMAIN_LATENTS["photo"]
    assert len(DOMAIN_LATENTS["web"]) == 9


@pytest.mark.parametrize("domain", DOMAINS)
def test_labels_balanced_and_reachable(domain: str) -> None:
    rng = np.random.default_rng(0)
    n = 900
    counts = collections.Counter(sample_scene(rng, domain).label for _ in range(n))
    expected = n / len(LABELS[domain])
    assert set(counts) == set(LABELS[domain])
    for label in LABELS[domain]:
        assert abs(counts[label] - expected) < 0.3 * expected, (label, counts)


@pytest.mark.parametrize("domain", DOMAINS)
def test_emoscene_rows_exactly_balanced(domain: str) -> None:
    k = len(LABELS[domain])
    rows = emoscene_rows(domain, "train", 3 * k, seed=1)
    counts = collections.Counter(r["label"] for r in rows)
    assert all(counts[label] == 3 for label in LABELS[domain])
    row = rows[0]
    assert set(row) == {"image", "domain", "label", "labels", "latent", "valence", "arousal", "cues", "description"}
    assert row["labels"] == LABELS[domain] and row["label"] in row["labels"]
    assert LATENT_TO_LABEL[domain][row["latent"]] == row["label"]
    cues = json.loads(row["cues"])
    assert set(cues) == {"face", "light", "objects"}


def test_emoscene_rows_deterministic() -> None:
    a = emoscene_rows("web", "train", 12, seed=3)
    b = emoscene_rows("web", "train", 12, seed=3)
    c = emoscene_rows("web", "train", 12, seed=4)
    d = emoscene_rows("web", "test", 12, seed=3)
    assert _pixels(a) == _pixels(b) and _strip_images(a) == _strip_images(b)
    assert _pixels(a) != _pixels(c)
    assert _pixels(a) != _pixels(d)


def test_render_deterministic_for_rng_state() -> None:
    for domain in DOMAINS:
        scene = sample_scene(np.random.default_rng(5), domain)
        one = render(scene, np.random.default_rng(9)).tobytes()
        assert one == render(scene, np.random.default_rng(9)).tobytes()
        assert one != render(scene, np.random.default_rng(10)).tobytes()


def test_images_size_and_mode() -> None:
    for domain in DOMAINS:
        for row in emoscene_rows(domain, "test", 6, seed=0):
            assert row["image"].size == (48, 48) and row["image"].mode == "RGB"
    for row in general_rows("train", SMALL, seed=0):
        if row["task"] in ("emotion_text", "reasoning_text"):
            assert row["image"] is None
        else:
            assert row["image"].size == (48, 48) and row["image"].mode == "RGB"


def test_renderers_differ_by_domain() -> None:
    """Same cues drawn by photo vs art vs web must not give the same picture."""
    scene = sample_scene(np.random.default_rng(2), "web", latent="fear")
    images = [render(scene.__class__(**{**scene.__dict__, "domain": d}), np.random.default_rng(0)) for d in DOMAINS]
    assert len({im.tobytes() for im in images}) == 3


def test_general_rows_deterministic_and_split_dependent() -> None:
    a = general_rows("train", SMALL, seed=7)
    b = general_rows("train", SMALL, seed=7)
    c = general_rows("train", SMALL, seed=8)
    assert _strip_images(a) == _strip_images(b) and _pixels(a) == _pixels(b)
    assert _pixels(a) != _pixels(c)
    test_tasks = {t: n for t, n in SMALL.items() if t not in general.TRAIN_ONLY}
    t1 = general_rows("test", test_tasks, seed=7)
    assert _pixels(t1) != _pixels([r for r in a if r["task"] in test_tasks])
    assert [r["task"] for r in a] == [t for t in TASKS for _ in range(SMALL[t])]
    for row in a:
        assert set(row) == {"task", "image", "question", "answer", "choices"}
        assert row["choices"] is None or row["answer"] in row["choices"]


def test_training_only_tasks_rejected_for_test() -> None:
    with pytest.raises(ValueError):
        general_rows("test", {"describe": 2}, seed=0)
    with pytest.raises(ValueError):
        general_rows("train", {"nope": 2}, seed=0)
    with pytest.raises(ValueError):
        general_rows("val", {"vqa": 2}, seed=0)


def test_digit_splits_disjoint(monkeypatch: pytest.MonkeyPatch) -> None:
    train, test = set(digit_indices("train")), set(digit_indices("test"))
    assert not train & test and len(train) + len(test) == 1797
    # Make each digit's target its own sample index, so answers reveal which samples each split used.
    fake_images = np.zeros((1797, 8, 8), np.float32)
    monkeypatch.setattr(general, "_digits", lambda: (fake_images, np.arange(1797)))
    used_train = {int(r["answer"]) for r in general_rows("train", {"digits": 400}, seed=0)}
    used_test = {int(r["answer"]) for r in general_rows("test", {"digits": 400}, seed=0)}
    assert used_train <= train and used_test <= test


def test_digits_rows_real() -> None:
    rows = general_rows("test", {"digits": 30}, seed=1)
    assert all(r["answer"] in [str(d) for d in range(10)] for r in rows)
    assert all(r["question"] == "which digit is written in the image?" for r in rows)


def test_caption_balanced_and_formatted() -> None:
    rows = general_rows("train", {"caption": 40}, seed=2)
    answers = collections.Counter(r["answer"] for r in rows)
    assert answers["yes"] == answers["no"] == 20
    prefix = CAPTION_QUESTION.split("{text}")[0]
    assert all(r["question"].startswith(prefix) for r in rows)
    assert prefix == "Can the following text describe the image? Please answer with yes or no.\n"
    emo = [r for r in rows if "light." in r["question"]]
    assert 15 <= len(emo) <= 25


def test_perturb_scene_changes_description() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        scene = sample_scene(rng, "photo")
        assert describe(perturb_scene(scene, rng)) != describe(scene)


def test_vqa_answers_are_valid() -> None:
    rows = general_rows("train", {"vqa": 200}, seed=3)
    kinds = collections.Counter(r["question"].split()[0:2][1] for r in rows)
    assert len(kinds) >= 3
    for r in rows:
        if r["question"].startswith("how many"):
            assert r["answer"] in ("one", "two", "three", "four")
        m = re.match(r"what color is the (\w+)\?", r["question"])
        if m:
            assert r["answer"] in general.COLORS and m.group(1) in general.SHAPES


def test_describe_mentions_cues() -> None:
    rng = np.random.default_rng(4)
    for _ in range(200):
        scene = sample_scene(rng, "art")
        text = describe(scene)
        assert text == text.lower() and text.endswith(".")
        assert f"{scene.light} light" in text
        assert all(obj in text for obj in scene.objects)
        if scene.face is None:
            assert text.startswith("no face.")
        else:
            assert text.startswith("a face with")
            assert f"{scene.face['eyes']} eyes" in text
            if scene.face["brows"] != "none":
                assert f"{scene.face['brows']} brows" in text


def test_polarity_arousal_matches_web_quadrants() -> None:
    quadrant = {"excited": ("positive", "high"), "relaxed": ("positive", "low"), "tense": ("negative", "high")}
    quadrant["gloomy"] = ("negative", "low")
    for latent, label in LATENT_TO_LABEL["web"].items():
        polarity, level = quadrant[label]
        assert polarity_arousal(latent) == f"the emotion is {polarity} with {level} arousal"


def test_reasoning_rows_structure() -> None:
    rows = general_rows("train", {"reasoning_text": 10}, seed=5)
    pattern = re.compile(r"^<step1> .+ </step1> <step2> .+ </step2> <step3> .+ </step3> \\boxed\{(\w+)\}$")
    for r in rows:
        assert r["question"].endswith(STRUCTURED_INSTRUCTION)
        m = pattern.match(r["answer"])
        labels = r["question"].split("emotional category: ")[1].split("\n")[0].split(", ")
        assert m and m.group(1) in labels and labels in LABELS.values()
    assert STRUCTURED_INSTRUCTION.endswith("The final answer MUST be put in \\boxed{}.")


def test_bayes_accuracy_photo_needs_several_cues() -> None:
    full = bayes_accuracy("photo", 2500, seed=0)
    assert 0.85 <= full <= 0.97
    for family in ("face", "light", "objects"):
        assert bayes_accuracy("photo", 2500, seed=1, use=(family,)) <= 0.65, family


def test_text_tasks_are_learnable() -> None:
    for domain in DOMAINS:
        assert bayes_accuracy(domain, 800, seed=2, noise=general.TEXT_NOISE) >= 0.9


def test_latent_override_and_errors() -> None:
    rng = np.random.default_rng(0)
    assert sample_scene(rng, "art", latent="contentment").label == "joy"
    with pytest.raises(ValueError):
        sample_scene(rng, "photo", latent="surprise")
    with pytest.raises(ValueError):
        sample_scene(rng, "cartoon")
    assert scenes.feeling("anger") == scenes.FEELINGS["anger"][0]
