"""General-knowledge tasks for pretraining the tiny LLaVA-style model and for measuring forgetting.

Rows are plain dicts ``{"task", "image", "question", "answer", "choices"}``. Image tasks (vqa, caption, digits,
describe) use 48x48 RGB images like EmoScenes; text tasks have ``image=None``. Every generator draws from an rng
seeded by (seed, split, task), so rows are deterministic per (split, seed) and train/test streams never share a seed;
digits are additionally split by sample index so no test digit image is ever seen in training.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mllmtune.world.render import render
from mllmtune.world.scenes import (
    DOMAINS,
    FACE_PARTS,
    LABELS,
    LIGHTS,
    OBJECTS,
    Scene,
    describe,
    describe_objects,
    feeling,
    latent_for_label,
    polarity_arousal,
    sample_scene,
    scene_row,
)

# The instruction and the two reflective question forms as world v5's base learned them in pretraining: the suite's
# earlier paraphrases of EMO-R3's texts. They are frozen with the world (changing them changes what every world
# build learns); runs ask in the released wording (`mllmtune.emo_r3.template`), which the base has to generalise to,
# as a real instruction-tuned model meets a prompt worded differently from its tuning data.
STRUCTURED_INSTRUCTION = (
    "First think the emotional meaning step by step, then give the final answer. The reasoning MUST follow this "
    "structure: <step1> what in the scene could trigger emotion (action, face, environment) </step1> <step2> how a "
    "person would feel about it </step2> <step3> whether the emotion is positive or negative, high or low arousal "
    "</step3>. The final answer MUST be put in \\boxed{}."
)
CAPTION_QUESTION = "Can the following text describe the image? Please answer with yes or no.\n{text}"
_COHERENCE_QUESTION = (
    "{text}\nWhich emotion best describes the text above? "
    "Answer using one emotional category (one word only): {labels}"
)


def coherence_question(text: str, labels: list[str]) -> str:
    return _COHERENCE_QUESTION.format(text=text, labels=", ".join(labels))


TASKS: tuple[str, ...] = ("vqa", "caption", "digits", "emotion_text", "describe", "reasoning_text")
TRAIN_ONLY: frozenset[str] = frozenset({"describe", "reasoning_text"})
SPLITS: dict[str, int] = {"train": 0, "test": 1}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (250, 220, 20),
    "purple": (140, 40, 180),
    "orange": (255, 140, 0),
    "white": (250, 250, 250),
    "black": (10, 10, 10),
}
NUMBER_WORDS: tuple[str, ...] = ("one", "two", "three", "four")
YES_NO: list[str] = ["yes", "no"]
DIGIT_TEST_MOD = 5  # load_digits index % 5 == 0 -> test, else train

# Text tasks sample cues with half the image disagreement rate, so the label is recoverable from text ~95% of the time.
TEXT_NOISE = 0.5

DIGIT_QUESTION = "which digit is written in the image?"
DESCRIBE_QUESTION = "Describe what could trigger emotion in the scene."

Row = dict[str, Any]


def _row(task: str, image: Image.Image | None, question: str, answer: str, choices: list[str] | None) -> Row:
    return {"task": task, "image": image, "question": question, "answer": answer, "choices": choices}


def _rng(seed: int, split: str, stream: int) -> np.random.Generator:
    """Independent stream per (seed, split, task/domain)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
    return np.random.default_rng([seed, SPLITS[split], stream])


# ----------------------------------------------------------------------------------------------------------------
# question templates shared with EMO-R3 and evaluation


def emotion_question(description: str, labels: list[str]) -> str:
    """'A person sees {description}. Which emotion does this evoke? ...' (description's final period is merged)."""
    return (
        f"A person sees {description.rstrip('.')}. Which emotion does this evoke? "
        f"Answer using one emotional category: {', '.join(labels)}"
    )


def structured_answer(description: str, feeling_text: str, polarity_text: str, label: str) -> str:
    """The reasoning target: three tagged steps then the boxed label."""
    return (
        f"<step1> {description} </step1> <step2> {feeling_text} </step2> <step3> {polarity_text} </step3> "
        f"\\boxed{{{label}}}"
    )


# ----------------------------------------------------------------------------------------------------------------
# shape images


def _draw_shape(
    d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, color: tuple[int, int, int]
) -> None:
    edge = (60, 60, 60)
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color, outline=edge, width=2)
    elif shape == "square":
        s = r * 0.85
        d.rectangle((cx - s, cy - s, cx + s, cy + s), fill=color, outline=edge, width=2)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=color, outline=edge, width=2)
    elif shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else 0.45 * r
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        d.polygon(pts, fill=color, outline=edge, width=2)
    else:  # cross: a plus sign of arm half-width w
        w = 0.33 * r
        rel = [
            (-w, -r),
            (w, -r),
            (w, -w),
            (r, -w),
            (r, w),
            (w, w),
            (w, r),
            (-w, r),
            (-w, w),
            (-r, w),
            (-r, -w),
            (-w, -w),
        ]
        d.polygon([(cx + x, cy + y) for x, y in rel], fill=color, outline=edge, width=2)


def sample_shapes(rng: np.random.Generator) -> list[dict[str, Any]]:
    """1-4 shapes with distinct shapes and distinct colours, one per quadrant (so every question is unambiguous)."""
    n = int(rng.integers(1, 5))
    shapes = rng.choice(len(SHAPES), n, replace=False)
    colors = rng.choice(len(COLORS), n, replace=False)
    quads = rng.choice(4, n, replace=False)
    names = list(COLORS)
    items = [
        {"shape": SHAPES[s], "color": names[c], "quad": int(q)} for s, c, q in zip(shapes, colors, quads, strict=True)
    ]
    return sorted(items, key=lambda it: it["quad"])  # reading order: top-left, top-right, bottom-left, bottom-right


def render_shapes(items: list[dict[str, Any]], rng: np.random.Generator, layout: list | None = None) -> Image.Image:
    """Plain mid-grey background (no object colour is grey) with each shape inside its quadrant.

    Given a list, `layout` receives `(item index, cx, cy, r)` per shape in output pixels (see `render.render`)."""
    bg = tuple(int(v) for v in rng.integers(110, 150) + rng.integers(-8, 9, 3))
    img = Image.new("RGB", (96, 96), bg)
    d = ImageDraw.Draw(img)
    for i, it in enumerate(items):
        r = float(rng.uniform(13, 19))
        qx, qy = 48 * (it["quad"] % 2), 48 * (it["quad"] // 2)
        cx, cy = qx + rng.uniform(r + 2, 48 - r - 2), qy + rng.uniform(r + 2, 48 - r - 2)
        _draw_shape(d, it["shape"], cx, cy, r, COLORS[it["color"]])
        if layout is not None:
            layout.append((i, cx / 2, cy / 2, r / 2))
    return img.resize((48, 48), Image.Resampling.LANCZOS)


def shape_caption(items: list[dict[str, Any]]) -> str:
    """e.g. 'a red circle, a blue star and a white cross.'"""
    words = [f"{'an' if it['color'][0] in 'aeiou' else 'a'} {it['color']} {it['shape']}" for it in items]
    text = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    return text + "."


def _vqa_question(items: list[dict[str, Any]], rng: np.random.Generator) -> tuple[str, str, list[str]]:
    kind = int(rng.integers(4))
    it = items[int(rng.integers(len(items)))]
    if kind == 0:
        return f"what shape is the {it['color']} object?", it["shape"], list(SHAPES)
    if kind == 1:
        return f"what color is the {it['shape']}?", it["color"], list(COLORS)
    if kind == 2:
        return "how many shapes are there?", NUMBER_WORDS[len(items) - 1], list(NUMBER_WORDS)
    if rng.random() < 0.5:
        return f"is the {it['shape']} on the left or the right?", ("left", "right")[it["quad"] % 2], ["left", "right"]
    return f"is the {it['shape']} at the top or the bottom?", ("top", "bottom")[it["quad"] // 2], ["top", "bottom"]


def vqa_rows(rng: np.random.Generator, n: int) -> list[Row]:
    """Shape/colour/count/position questions about simple geometric scenes."""
    rows = []
    for _ in range(n):
        items = sample_shapes(rng)
        image = render_shapes(items, rng)
        question, answer, choices = _vqa_question(items, rng)
        rows.append(_row("vqa", image, question, answer, choices))
    return rows


# ----------------------------------------------------------------------------------------------------------------
# caption matching


def perturb_scene(scene: Scene, rng: np.random.Generator) -> Scene:
    """Change exactly one cue (a face part, face presence, the light, or one object) so the description differs."""
    family = ("face", "light", "objects")[int(rng.integers(3))]
    if family == "face":
        if scene.face is None:
            face = {part: str(rng.choice(values)) for part, values in FACE_PARTS.items()}
            return dataclasses.replace(scene, face=face)
        if rng.random() < 0.2:
            return dataclasses.replace(scene, face=None)
        part = list(FACE_PARTS)[int(rng.integers(3))]
        options = [v for v in FACE_PARTS[part] if v != scene.face[part]]
        return dataclasses.replace(scene, face={**scene.face, part: str(rng.choice(options))})
    if family == "light":
        return dataclasses.replace(scene, light=str(rng.choice([x for x in LIGHTS if x != scene.light])))
    objects = list(scene.objects)
    objects[int(rng.integers(len(objects)))] = str(rng.choice([o for o in OBJECTS if o not in scene.objects]))
    return dataclasses.replace(scene, objects=tuple(sorted(objects, key=OBJECTS.index)))


def _perturb_shapes(items: list[dict[str, Any]], rng: np.random.Generator) -> list[dict[str, Any]]:
    """Change one shape's colour or kind to one not in the image, or drop/add a shape."""
    items = [dict(it) for it in items]
    kind = int(rng.integers(4))
    if kind == 2 and len(items) > 1:
        items.pop(int(rng.integers(len(items))))
    elif kind == 3 and len(items) < 4:
        free = [q for q in range(4) if q not in {it["quad"] for it in items}]
        shape = str(rng.choice([s for s in SHAPES if s not in {it["shape"] for it in items}]))
        color = str(rng.choice([c for c in COLORS if c not in {it["color"] for it in items}]))
        items.append({"shape": shape, "color": color, "quad": int(rng.choice(free))})
    else:
        it = items[int(rng.integers(len(items)))]
        key, pool = ("color", list(COLORS)) if kind % 2 == 0 else ("shape", list(SHAPES))
        it[key] = str(rng.choice([v for v in pool if v not in {x[key] for x in items}]))
    return sorted(items, key=lambda x: x["quad"])


def caption_subset(k: int) -> str:
    """Which image the k-th caption row (in generation order) shows: 'scene' (an EmoScene) or 'shape'."""
    return "scene" if (k // 2) % 2 == 0 else "shape"


def caption_rows(rng: np.random.Generator, n: int) -> list[Row]:
    """Image-text matching: even rows 'yes', odd rows 'no'; pairs alternate EmoScene and shape images."""
    rows = []
    for i in range(n):
        match = i % 2 == 0
        if caption_subset(i) == "scene":
            scene = sample_scene(rng, DOMAINS[int(rng.integers(len(DOMAINS)))])
            image, text = render(scene, rng), describe(scene)
            if not match:
                other = scene
                while describe(other) == text:  # hard negative (one cue changed) or an unrelated scene
                    other = perturb_scene(scene, rng) if rng.random() < 0.5 else sample_scene(rng, scene.domain)
                text = describe(other)
        else:
            items = sample_shapes(rng)
            image = render_shapes(items, rng)
            text = shape_caption(items if match else _perturb_shapes(items, rng))
        rows.append(_row("caption", image, CAPTION_QUESTION.format(text=text), "yes" if match else "no", YES_NO))
    return rows


# ----------------------------------------------------------------------------------------------------------------
# digits


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.astype(np.float32) / 16.0, data.target.astype(int)


def digit_indices(split: str) -> np.ndarray:
    """Fixed held-out split of sklearn's digits by sample index (index % 5 == 0 is test)."""
    images, _ = _digits()
    idx = np.arange(len(images))
    return idx[idx % DIGIT_TEST_MOD == 0] if split == "test" else idx[idx % DIGIT_TEST_MOD != 0]


def render_digit(image8: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """8x8 digit -> 48x48 RGB: bilinear upscale to 36-44 px, random offset, brightness jitter, sometimes inverted."""
    size = int(rng.integers(36, 45))
    small = Image.fromarray((image8 * 255).astype(np.uint8), "L").resize((size, size), Image.Resampling.BILINEAR)
    canvas = np.zeros((48, 48), np.float32)
    x0, y0 = (int(v) for v in rng.integers(0, 48 - size + 1, size=2))
    canvas[y0 : y0 + size, x0 : x0 + size] = np.asarray(small, np.float32) * rng.uniform(0.75, 1.0)
    if rng.random() < 0.5:
        canvas = 255.0 - canvas
    canvas = np.clip(canvas + rng.normal(0, 4, canvas.shape), 0, 255)
    return Image.fromarray(canvas.astype(np.uint8), "L").convert("RGB")


def digits_rows(rng: np.random.Generator, n: int, split: str) -> list[Row]:
    """Handwritten digit recognition drawn only from the split's own sample indices."""
    images, targets = _digits()
    pool = digit_indices(split)
    picks = rng.choice(pool, size=n, replace=n > len(pool))
    choices = [str(d) for d in range(10)]
    return [_row("digits", render_digit(images[k], rng), DIGIT_QUESTION, str(targets[k]), choices) for k in picks]


# ----------------------------------------------------------------------------------------------------------------
# emotion knowledge as text


def _text_scene(rng: np.random.Generator) -> Scene:
    return sample_scene(rng, DOMAINS[int(rng.integers(len(DOMAINS)))], noise=TEXT_NOISE)


def emotion_text_rows(rng: np.random.Generator, n: int) -> list[Row]:
    """Situation -> emotion as text; even rows ask about a described scene, odd rows the coherence form."""
    rows = []
    for i in range(n):
        scene = _text_scene(rng)
        labels = LABELS[scene.domain]
        if i % 2 == 0:
            question = emotion_question(describe(scene), labels)
        else:
            question = coherence_question(f"{describe(scene)} {feeling(scene.latent, rng)}.", labels)
        rows.append(_row("emotion_text", None, question, scene.label, list(labels)))
    return rows


def reasoning_text_rows(rng: np.random.Generator, n: int) -> list[Row]:
    """Structured step1/step2/step3 reasoning over a described scene, ending in \\boxed{label}."""
    rows = []
    for _ in range(n):
        scene = _text_scene(rng)
        labels = LABELS[scene.domain]
        desc = describe(scene)
        question = emotion_question(desc, labels) + "\n" + STRUCTURED_INSTRUCTION
        answer = structured_answer(desc, feeling(scene.latent, rng), polarity_arousal(scene.latent), scene.label)
        rows.append(_row("reasoning_text", None, question, answer, None))  # answer is free text, not a choice
    return rows


def describe_rows(rng: np.random.Generator, n: int) -> list[Row]:
    """Cue perception on EmoScene images with no emotion label: full description, face, light, objects."""
    rows = []
    for i in range(n):
        scene = sample_scene(rng, DOMAINS[int(rng.integers(len(DOMAINS)))])
        image = render(scene, rng)
        kind = i % 4
        if kind == 0:
            rows.append(_row("describe", image, DESCRIBE_QUESTION, describe(scene), None))
        elif kind == 1:
            rows.append(
                _row("describe", image, "Is there a face in the image?", "yes" if scene.face else "no", YES_NO)
            )
        elif kind == 2:
            rows.append(_row("describe", image, "What is the light like?", scene.light, list(LIGHTS)))
        else:
            rows.append(
                _row("describe", image, "Which objects are in the scene?", describe_objects(scene.objects), None)
            )
    return rows


# ----------------------------------------------------------------------------------------------------------------
# public entry points

_GENERATORS: dict[str, Callable[[np.random.Generator, int], list[Row]]] = {
    "vqa": vqa_rows,
    "caption": caption_rows,
    "emotion_text": emotion_text_rows,
    "describe": describe_rows,
    "reasoning_text": reasoning_text_rows,
}


def general_rows(split: str, n_per_task: dict[str, int], seed: int) -> list[Row]:
    """Rows for each requested task, in TASKS order; deterministic per (split, seed), independent across tasks.

    Training-only tasks (describe, reasoning_text) raise ValueError for split='test'.
    """
    unknown = set(n_per_task) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; expected a subset of {TASKS}")
    if split == "test" and TRAIN_ONLY & {t for t, n in n_per_task.items() if n > 0}:
        raise ValueError(f"tasks {sorted(TRAIN_ONLY)} are training-only")
    rows: list[Row] = []
    for code, task in enumerate(TASKS):
        n = n_per_task.get(task, 0)
        if n <= 0:
            continue
        rng = _rng(seed, split, code)
        rows += digits_rows(rng, n, split) if task == "digits" else _GENERATORS[task](rng, n)
    return rows


def emoscene_rows(domain: str, split: str, n: int, seed: int) -> list[Row]:
    """n rendered EmoScene rows (scene_row format) for a domain, labels exactly balanced up to n % n_labels."""
    if domain not in LABELS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    rng = _rng(seed, split, 100 + DOMAINS.index(domain))
    labels = LABELS[domain]
    seq = list(labels) * (n // len(labels)) + [str(x) for x in rng.choice(labels, n % len(labels), replace=False)]
    rows = []
    for label in rng.permutation(seq):
        scene = sample_scene(rng, domain, latent_for_label(rng, domain, str(label)))
        rows.append(scene_row(scene, render(scene, rng)))
    return rows
