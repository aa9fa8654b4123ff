"""Vision-tower pretraining for the embedded world: the role CLIP pretraining plays for a real LLaVA.

A ViT trained from scratch only through the language-model loss learns colours but not shapes, digits or face
details in a CPU-sized budget. So, before the language stage, the world's own CLIP tower is trained with small
classification heads on what the images show: face attributes, light and objects of EmoScenes (never emotion
labels), shape and colour per quadrant of the shape scenes, and digits. The heads are then discarded; the
language stage keeps the tower frozen, as LLaVA-1.5 does.
"""

from __future__ import annotations

import numpy as np

from mllmtune.world import general as G
from mllmtune.world import scenes as S
from mllmtune.world.render import render

# (head name, classes); -100 marks "not applicable to this image".
HEADS = {
    "face": 2,
    "mouth": len(S.MOUTHS),
    "brows": len(S.BROWS),
    "eyes": len(S.EYES),
    "light": len(S.LIGHTS),
    "digit": 10,
    "count": 4,
    **{f"shape{q}": len(G.SHAPES) + 1 for q in range(4)},
    **{f"color{q}": len(G.COLORS) + 1 for q in range(4)},
}
QUADRANT_HEADS = {f"shape{q}" for q in range(4)} | {f"color{q}" for q in range(4)}


def _empty() -> dict:
    return {k: -100 for k in HEADS} | {"objects": np.full(len(S.OBJECTS), -1.0, dtype=np.float32)}


def vision_examples(n: int, seed: int) -> list[tuple]:
    """(image, targets) for n images: a third EmoScenes (any domain), a third shape scenes, a third digits."""
    rng = np.random.default_rng([seed, 7919])
    images8, digit_targets = G._digits()
    train_digits = G.digit_indices("train")
    out = []
    for i in range(n):
        t = _empty()
        kind = i % 3
        if kind == 0:
            scene = S.sample_scene(rng, S.DOMAINS[int(rng.integers(len(S.DOMAINS)))])
            img = render(scene, rng)
            t["face"] = int(scene.face is not None)
            if scene.face is not None:
                t["mouth"] = S.MOUTHS.index(scene.face["mouth"])
                t["brows"] = S.BROWS.index(scene.face["brows"])
                t["eyes"] = S.EYES.index(scene.face["eyes"])
            t["light"] = S.LIGHTS.index(scene.light)
            t["objects"] = np.array([o in scene.objects for o in S.OBJECTS], dtype=np.float32)
        elif kind == 1:
            items = G.sample_shapes(rng)
            img = G.render_shapes(items, rng)
            t["count"] = len(items) - 1
            colors = list(G.COLORS)
            for q in range(4):
                t[f"shape{q}"], t[f"color{q}"] = len(G.SHAPES), len(colors)  # "empty quadrant"
            for it in items:
                t[f"shape{it['quad']}"] = G.SHAPES.index(it["shape"])
                t[f"color{it['quad']}"] = colors.index(it["color"])
        else:
            k = int(rng.choice(train_digits))
            img = G.render_digit(images8[k], rng)
            t["digit"] = int(digit_targets[k])
        out.append((img, t))
    return out


def pretrain_vision(
    tower, image_processor, n: int, epochs: float, seed: int, batch_size: int = 64, lr: float = 1e-3, progress=None
) -> dict:
    """Train `tower` (a CLIPVisionModel) in place; returns head accuracies on a held-out batch of images."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    data = vision_examples(n, seed)
    held = vision_examples(600, seed + 1)
    hidden = tower.config.hidden_size
    grid = tower.config.image_size // tower.config.patch_size
    heads = nn.ModuleDict({k: nn.Linear(hidden, c) for k, c in HEADS.items()})
    heads["objects"] = nn.Linear(hidden, len(S.OBJECTS))
    # One learned query per global head: attention pooling finds small cues (a mouth, an icon) that a mean over
    # all patches would dilute.
    global_heads = [k for k in heads if k not in QUADRANT_HEADS]
    queries = nn.Parameter(torch.randn(len(global_heads), hidden) * hidden**-0.5)
    params = list(tower.parameters()) + list(heads.parameters()) + [queries]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = int(np.ceil(len(data) / batch_size) * epochs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)

    def tensors(batch):
        pixels = image_processor([img for img, _ in batch], return_tensors="pt")["pixel_values"]
        ys = {k: torch.tensor([t[k] for _, t in batch]) for k in HEADS}
        ys["objects"] = torch.tensor(np.stack([t["objects"] for _, t in batch]))
        return pixels, ys

    def logits(pixels):
        patches = tower(pixel_values=pixels).last_hidden_state[:, 1:]  # the tokens LLaVA feeds to the projector
        b = patches.shape[0]
        weights = torch.softmax(torch.einsum("bph,qh->bqp", patches, queries), dim=-1)
        pooled = torch.einsum("bqp,bph->bqh", weights, patches)
        quads = patches.reshape(b, 2, grid // 2, 2, grid // 2, hidden).mean((2, 4)).reshape(b, 4, hidden)
        out = {k: heads[k](quads[:, int(k[-1])]) for k in QUADRANT_HEADS}
        out.update({k: heads[k](pooled[:, i]) for i, k in enumerate(global_heads)})
        return out

    def loss_fn(out, ys):
        loss = sum(
            nn.functional.cross_entropy(out[k], ys[k], ignore_index=-100) for k in HEADS if (ys[k] != -100).any()
        )
        rows = ys["objects"][:, 0] >= 0
        if rows.any():  # summed over the 18 objects (a mean would make it 18x weaker than one class head)
            loss = (
                loss
                + nn.functional.binary_cross_entropy_with_logits(
                    out["objects"][rows], ys["objects"][rows], reduction="sum"
                )
                / rows.sum()
            )
        return loss

    task = progress.add_task("pretraining vision tower", total=steps) if progress else None
    rng = np.random.default_rng(seed)
    tower.train()
    step = 0
    while step < steps:
        order = rng.permutation(len(data))
        for start in range(0, len(order), batch_size):
            if step >= steps:
                break
            pixels, ys = tensors([data[i] for i in order[start : start + batch_size]])
            loss = loss_fn(logits(pixels), ys)
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
    acc = {}
    for k in HEADS:
        m = ys[k] != -100
        acc[k] = round(float((out[k][m].argmax(-1) == ys[k][m]).float().mean()), 3)
    m = ys["objects"] >= 0
    acc["objects"] = round(float(((out["objects"][m] > 0).float() == ys["objects"][m]).float().mean()), 3)
    return acc
