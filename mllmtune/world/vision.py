"""Vision-tower pretraining for the embedded world: the role CLIP pretraining plays for a real LLaVA.

A ViT trained from scratch only through the language-model loss learns colours but not shapes, digits or face
details in a CPU-sized budget. So, before the language stage, the world's own CLIP tower is trained with small
classification heads on what the images show (never emotion labels): image-level heads for face presence and face
parts, light, objects, shape count and digits, and patch-level heads that tell every patch what is drawn under it
(background, the face and its parts, which object, which shape in which colour) and where it sits. The heads are then
discarded; the language stage keeps the tower frozen, as LLaVA-1.5 does.
"""

from __future__ import annotations

import time

import numpy as np

from mllmtune.world import general as G
from mllmtune.world import scenes as S
from mllmtune.world.render import render

# Image-level heads (attention-pooled): (name, classes); -100 marks "not applicable to this image".
HEADS = {
    "face": 2,
    "mouth": len(S.MOUTHS),
    "brows": len(S.BROWS),
    "eyes": len(S.EYES),
    "light": len(S.LIGHTS),
    "digit": 10,
    "count": 4,
}
# Patch-level heads: every patch names what lies under it, read from the renderers' layout. Dense targets keep each
# cue in the tokens that show it (face details in the face's patches, a shape's kind and colour in its own), where
# pooled heads let the tower spread or drop them; with lr 2e-3 they lifted the held-out mouth / brows / eyes heads
# from 0.728 / 0.743 / 0.824 (pooled heads only, same image mix and steps) to 0.792 / 0.866 / 0.907 (each on its
# own run's held-out images, which differ in mix).
WHAT = ("background", "face", *S.OBJECTS)
# Each patch head's background class: the target of an uncovered patch, and left out of the head's score, since
# background patches are most of every image and a head that knew only "background" would score high (v4's shape
# head read 0.935 with them, 0.538 without).
BACKGROUND = {"what": WHAT.index("background"), "shape_at": len(G.SHAPES), "color_at": len(G.COLORS)}
# Loss weight of the heads that name scene objects (the patch head `what` and the image-level `objects`). Objects are
# the cue photo emotions lose most to: from world v4's tower (weight 1), linear probes on the frozen photo features
# recovered the whole object set of 34% of test scenes, and the exact label posterior over the probed cues was right on
# 80.0% of them (88.3% with the true objects, 91.5% with all cues true). With weight 3 (same images and steps), 52.7%
# and 83.8%, and a linear probe from the features to the label rose from 76.0% to 79.6%.
OBJECT_WEIGHT = 3.0


def patch_heads(grid: int) -> dict[str, int]:
    """Patch-level heads: (name, classes), for a tower of `grid` x `grid` patches."""
    return {
        "what": len(WHAT),
        "mouth_at": len(S.MOUTHS),
        "brows_at": len(S.BROWS),
        "eyes_at": len(S.EYES),
        "shape_at": len(G.SHAPES) + 1,  # + background
        "color_at": len(G.COLORS) + 1,
        "row": grid,  # the patch's own row and column, so positions survive to the tower's output
        "col": grid,
    }


def _empty(grid: int) -> dict:
    t = {k: -100 for k in HEADS} | {k: np.full(grid * grid, -100, dtype=np.int64) for k in patch_heads(grid)}
    t["row"], t["col"] = np.repeat(np.arange(grid), grid), np.tile(np.arange(grid), grid)
    return t | {"objects": np.full(len(S.OBJECTS), -1.0, dtype=np.float32)}


def _cover(layout: list, grid: int, size: int) -> np.ndarray:
    """Per patch, the index of the layout slot drawn at the patch centre (-1 for none; the first slot wins).

    A slot reaches 0.8 of its radius (stars, triangles and crosses leave the rim of their disc empty) but never less
    than half a patch diagonal, so every slot inside the image covers at least one patch centre."""
    step = size / grid
    centres = (np.arange(grid) + 0.5) * step
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    out = np.full(grid * grid, -1, dtype=np.int64)
    for i, (_, cx, cy, r) in reversed(list(enumerate(layout))):
        reach = max(0.8 * r, 0.5 * step * 2**0.5 + 0.01)
        out[((xs - cx) ** 2 + (ys - cy) ** 2 <= reach * reach).reshape(-1)] = i
    return out


def vision_examples(n: int, seed: int, grid: int = 6, size: int = 48) -> list[tuple]:
    """(image, targets) for n images: half EmoScenes (any domain; faces are the hardest cue), a quarter shape
    scenes, a quarter digits."""
    rng = np.random.default_rng([seed, 7919])
    images8, digit_targets = G._digits()
    train_digits = G.digit_indices("train")
    out = []
    for i in range(n):
        t = _empty(grid)
        kind = (0, 1, 0, 2)[i % 4]
        layout: list = []
        if kind == 0:
            scene = S.sample_scene(rng, S.DOMAINS[int(rng.integers(len(S.DOMAINS)))])
            img = render(scene, rng, layout)
            t["face"] = int(scene.face is not None)
            cover = _cover(layout, grid, size)
            t["what"] = np.array([WHAT.index(k) for k, *_ in layout] + [BACKGROUND["what"]])[cover]  # -1: background
            if scene.face is not None:
                on_face = (cover == 0) & (layout[0][0] == "face")
                for part, values in S.FACE_PARTS.items():
                    t[part] = values.index(scene.face[part])
                    t[f"{part}_at"][on_face] = t[part]
            t["light"] = S.LIGHTS.index(scene.light)
            t["objects"] = np.array([o in scene.objects for o in S.OBJECTS], dtype=np.float32)
        elif kind == 1:
            items = G.sample_shapes(rng)
            img = G.render_shapes(items, rng, layout)
            t["count"] = len(items) - 1
            colors = list(G.COLORS)
            cover = _cover(layout, grid, size)
            shapes = np.array([G.SHAPES.index(it["shape"]) for it in items] + [BACKGROUND["shape_at"]])
            hues = np.array([colors.index(it["color"]) for it in items] + [BACKGROUND["color_at"]])
            t["shape_at"], t["color_at"] = shapes[cover], hues[cover]  # -1 indexes the appended background
        else:
            k = int(rng.choice(train_digits))
            img = G.render_digit(images8[k], rng)
            t["digit"] = int(digit_targets[k])
        out.append((img, t))
    return out


def vision_data(n: int, seed: int, grid: int = 6, size: int = 48) -> tuple[list, list, float]:
    """The stage's training and held-out examples, and the seconds drawing them took.

    A plain module function, so the world build can draw them in a second process while it renders its data sets.
    """
    t = time.time()
    return vision_examples(n, seed, grid, size), vision_examples(600, seed + 1, grid, size), time.time() - t


def pretrain_vision(
    tower,
    image_processor,
    data: list,
    held: list,
    epochs: float,
    seed: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    progress=None,
) -> dict:
    """Train `tower` (a CLIPVisionModel) in place on `vision_data`'s training examples; returns head accuracies on
    its held-out ones."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    hidden = tower.config.hidden_size
    grid = tower.config.image_size // tower.config.patch_size
    dense = patch_heads(grid)
    sizes = HEADS | dense
    heads = nn.ModuleDict({k: nn.Linear(hidden, c) for k, c in sizes.items()})
    heads["objects"] = nn.Linear(hidden, len(S.OBJECTS))
    # One learned query per global head: attention pooling finds small cues (a mouth, an icon) that a mean over
    # all patches would dilute.
    global_heads = [*HEADS, "objects"]
    queries = nn.Parameter(torch.randn(len(global_heads), hidden) * hidden**-0.5)
    params = list(tower.parameters()) + list(heads.parameters()) + [queries]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = int(np.ceil(len(data) / batch_size) * epochs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)

    def tensors(batch):
        # In chunks: the processor's per-call lists stay small; the pixels are the same whatever the chunking.
        pixels = torch.cat(
            [
                image_processor([img for img, _ in batch[i : i + 1024]], return_tensors="pt")["pixel_values"]
                for i in range(0, len(batch), 1024)
            ]
        )
        ys = {k: torch.tensor(np.array([t[k] for _, t in batch])) for k in (*HEADS, *dense)}
        ys["objects"] = torch.tensor(np.stack([t["objects"] for _, t in batch]))
        return pixels, ys

    def logits(pixels):
        patches = tower(pixel_values=pixels).last_hidden_state[:, 1:]  # the tokens LLaVA feeds to the projector
        weights = torch.softmax(torch.einsum("bph,qh->bqp", patches, queries), dim=-1)
        pooled = torch.einsum("bqp,bph->bqh", weights, patches)
        out = {k: heads[k](patches) for k in dense}  # [batch, patches, classes]
        out.update({k: heads[k](pooled[:, i]) for i, k in enumerate(global_heads)})
        return out

    def loss_fn(out, ys):
        loss = sum(
            nn.functional.cross_entropy(out[k].flatten(0, -2), ys[k].flatten(), ignore_index=-100)
            * (OBJECT_WEIGHT if k == "what" else 1.0)
            for k in (*HEADS, *dense)
            if (ys[k] != -100).any()
        )
        rows = ys["objects"][:, 0] >= 0
        if rows.any():  # summed over the 18 objects (a mean would make it 18x weaker than one class head)
            loss = (
                loss
                + OBJECT_WEIGHT
                * nn.functional.binary_cross_entropy_with_logits(
                    out["objects"][rows], ys["objects"][rows], reduction="sum"
                )
                / rows.sum()
            )
        return loss

    # Every image goes through the processor once, not once per epoch (its PIL path took 6% of a step's time).
    all_pixels, all_ys = tensors(data)
    task = progress.add_task("pretraining vision tower", total=steps) if progress else None
    rng = np.random.default_rng(seed)
    tower.train()
    step = 0
    while step < steps:
        order = rng.permutation(len(data))
        for start in range(0, len(order), batch_size):
            if step >= steps:
                break
            rows = torch.from_numpy(order[start : start + batch_size])
            loss = loss_fn(logits(all_pixels[rows]), {k: v[rows] for k, v in all_ys.items()})
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            if progress:
                progress.update(task, completed=step, description=f"pretraining vision tower loss {loss.item():.3f}")
    if progress:
        progress.remove_task(task)
    tower.eval()
    with torch.no_grad():
        pixels, ys = tensors(held)
        out = logits(pixels)
    return head_accuracy(out, ys)


def head_accuracy(out: dict, ys: dict) -> dict[str, float]:
    """Accuracy per head: per image for image-level heads, per drawn (non-background) patch for patch heads, per
    (image, object) for the multi-label objects head. `out` holds logits, `ys` targets (-100: not applicable)."""
    acc = {}
    for k in ys:
        if k == "objects":
            m = ys[k] >= 0
            acc[k] = round(float(((out[k][m] > 0).float() == ys[k][m]).float().mean()), 3)
            continue
        m = (ys[k] != -100) & (ys[k] != BACKGROUND.get(k, -100))
        acc[k] = round(float((out[k][m].argmax(-1) == ys[k][m]).float().mean()), 3)
    return acc
