"""The vision tower's dense targets: the renderers' layout, and what every patch is told it shows."""

from __future__ import annotations

import numpy as np
import pytest

from mllmtune.world import general
from mllmtune.world import scenes as S
from mllmtune.world.render import SKIN, render
from mllmtune.world.vision import WHAT, vision_data, vision_examples


@pytest.mark.parametrize("domain", S.DOMAINS)
def test_layout_never_changes_the_pixels(domain: str) -> None:
    for seed in range(5):
        scene = S.sample_scene(np.random.default_rng(seed), domain)
        plain = render(scene, np.random.default_rng(100 + seed))
        layout: list = []
        traced = render(scene, np.random.default_rng(100 + seed), layout)
        assert plain.tobytes() == traced.tobytes()
        assert [kind for kind, *_ in layout] == (["face"] if scene.face else []) + list(scene.objects)
    items = general.sample_shapes(np.random.default_rng(0))
    layout = []
    assert (
        general.render_shapes(items, np.random.default_rng(1)).tobytes()
        == general.render_shapes(items, np.random.default_rng(1), layout).tobytes()
    )
    assert [i for i, *_ in layout] == list(range(len(items)))


def test_layout_points_at_what_was_drawn() -> None:
    """A photo face's centre is skin; a shape's centre has the shape's colour (stars and crosses are solid there)."""
    rng = np.random.default_rng(3)
    faces = 0
    while faces < 30:
        scene = S.sample_scene(rng, "photo")
        layout: list = []
        pixels = np.asarray(render(scene, rng, layout), dtype=float)
        if scene.face is None:
            continue
        _, cx, cy, _ = layout[0]
        assert np.abs(pixels[int(cy), int(cx)] - SKIN).max() < 40, layout[0]
        faces += 1
    for _ in range(30):
        items = general.sample_shapes(rng)
        layout = []
        pixels = np.asarray(general.render_shapes(items, rng, layout), dtype=float)
        for i, cx, cy, _ in layout:
            target = general.COLORS[items[i]["color"]]
            assert np.abs(pixels[int(cy), int(cx)] - target).max() < 40, (items[i], cx, cy)


def test_patch_targets_name_what_lies_under_each_patch() -> None:
    examples = vision_examples(200, seed=0)
    seen = {"face": 0, "shape": 0, "digit": 0}
    for image, t in examples:
        assert (t["row"] == np.repeat(np.arange(6), 6)).all() and (t["col"] == np.tile(np.arange(6), 6)).all()
        if t["face"] != -100:  # an EmoScene
            on_face = t["what"] == WHAT.index("face")
            assert on_face.any() == bool(t["face"])
            for part in S.FACE_PARTS:
                assert ((t[f"{part}_at"] != -100) == on_face).all()
                assert (t[f"{part}_at"][on_face] == t[part]).all()
            assert (t["shape_at"] == -100).all()
            seen["face"] += int(t["face"])
        elif t["count"] != -100:  # a shape scene: a covered patch shows its named colour, the others do not
            pixels = np.asarray(image, dtype=float)
            colours = list(general.COLORS.values())
            for p, c in enumerate(t["color_at"]):
                patch = pixels[8 * (p // 6) : 8 * (p // 6 + 1), 8 * (p % 6) : 8 * (p % 6 + 1)].reshape(-1, 3)
                if c < len(colours):
                    assert (np.abs(patch - colours[c]).max(1) < 40).sum() >= 2, (p, c)
            assert len(np.unique(t["color_at"][t["color_at"] < len(colours)])) == t["count"] + 1
            assert (t["what"] == -100).all() and t["face"] == -100
            seen["shape"] += 1
        else:
            assert 0 <= t["digit"] < 10 and (t["what"] == -100).all() and (t["shape_at"] == -100).all()
            seen["digit"] += 1
    assert min(seen.values()) >= 10, seen


def test_patch_heads_are_scored_on_drawn_patches_only():
    """A head that answers "background" everywhere must score 0, not the share of background patches."""
    import torch

    from mllmtune.world.vision import BACKGROUND, head_accuracy

    bg = BACKGROUND["shape_at"]
    ys = {"shape_at": torch.tensor([[bg] * 7 + [-100, 1, 1]]), "face": torch.tensor([1])}
    always_background = torch.zeros(1, 10, bg + 1)
    always_background[..., bg] = 1.0
    out = {"shape_at": always_background, "face": torch.tensor([[0.0, 1.0]])}
    assert head_accuracy(out, ys) == {"shape_at": 0.0, "face": 1.0}
    knows_the_shape = always_background.clone()
    knows_the_shape[0, 8:, 1] = 2.0
    assert head_accuracy({**out, "shape_at": knows_the_shape}, ys)["shape_at"] == 1.0


def test_images_drawn_in_another_process_are_the_same() -> None:
    """The world build draws the vision stage's images in a second process; a build must not depend on where."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        there = pool.submit(vision_data, 12, 3).result()
    here = vision_data(12, 3)
    for a, b in zip([*there[0], *there[1]], [*here[0], *here[1]], strict=True):
        assert a[0].tobytes() == b[0].tobytes()
        assert a[1].keys() == b[1].keys() and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])
    assert len(here[0]) == 12 and len(here[1]) == 600
