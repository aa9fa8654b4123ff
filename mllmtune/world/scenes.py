"""EmoScenes cue model: latent emotions generate noisy, overlapping visible cues.

No drawing happens here. A scene is a latent emotion plus the cues it produced (face parts, light palette, objects);
the renderer turns cues into pixels. Cues overlap across emotions on purpose so that a label needs several cues, and
``bayes_accuracy`` measures how well the label can be recovered from the true cues under this exact generative model,
which is the ceiling any model looking at the images can reach.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

LATENTS: tuple[str, ...] = (
    "amusement",
    "anger",
    "awe",
    "contentment",
    "disgust",
    "excitement",
    "fear",
    "sadness",
    "surprise",
)

# Ground-truth (valence in [-1, 1], arousal in [0, 1]); the arousal split at 0.5 reproduces the web quadrants.
VALENCE_AROUSAL: dict[str, tuple[float, float]] = {
    "amusement": (0.7, 0.6),
    "anger": (-0.7, 0.85),
    "awe": (0.5, 0.4),
    "contentment": (0.75, 0.2),
    "disgust": (-0.65, 0.55),
    "excitement": (0.8, 0.9),
    "fear": (-0.8, 0.85),
    "sadness": (-0.75, 0.2),
    "surprise": (0.35, 0.8),
}
AROUSAL_THRESHOLD = 0.5

DOMAINS: tuple[str, ...] = ("photo", "art", "web")
LABELS: dict[str, list[str]] = {
    "photo": ["amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness"],
    "art": ["anger", "disgust", "fear", "joy", "sadness", "surprise"],
    "web": ["excited", "relaxed", "tense", "gloomy"],
}
LATENT_TO_LABEL: dict[str, dict[str, str]] = {
    "photo": {x: x for x in LABELS["photo"]},
    "art": {
        "amusement": "joy",
        "contentment": "joy",
        "excitement": "joy",
        "anger": "anger",
        "disgust": "disgust",
        "fear": "fear",
        "sadness": "sadness",
        "surprise": "surprise",
    },
    "web": {
        "amusement": "excited",
        "excitement": "excited",
        "surprise": "excited",
        "contentment": "relaxed",
        "awe": "relaxed",
        "anger": "tense",
        "fear": "tense",
        "disgust": "tense",
        "sadness": "gloomy",
    },
}
DOMAIN_LATENTS: dict[str, list[str]] = {d: [x for x in LATENTS if x in LATENT_TO_LABEL[d]] for d in DOMAINS}

MOUTHS: tuple[str, ...] = ("smile", "grin", "frown", "open", "flat", "wavy")
BROWS: tuple[str, ...] = ("raised", "furrowed", "sad", "none")
EYES: tuple[str, ...] = ("wide", "normal", "closed", "teary")
LIGHTS: tuple[str, ...] = ("warm", "cold", "red", "grey", "pastel", "murky", "night")
OBJECTS: tuple[str, ...] = (
    "sun",
    "rain",
    "spikes",
    "fireworks",
    "mountains",
    "confetti",
    "flowers",
    "lightning",
    "spider",
    "skull",
    "trash",
    "fire",
    "stars",
    "gift",
    "balloon",
    "tree",
    "house",
    "ball",
)
DISTRACTORS: tuple[str, ...] = ("tree", "house", "ball")
FACE_PARTS: dict[str, tuple[str, ...]] = {"mouth": MOUTHS, "brows": BROWS, "eyes": EYES}

# Prototype tables: what each latent tends to produce. Each cue family alone confuses a different group of latents
# (faces: amusement~contentment, awe~fear, anger~disgust; light: warm/pastel, night/cold/grey and red/murky chains;
# objects: party, nature, danger, dirt), so only the combination of families pins the label down.
PROTOTYPES: dict[str, dict[str, dict[str, float]]] = {
    "amusement": {
        "mouth": {"grin": 0.8, "smile": 0.2},
        "brows": {"none": 0.8, "raised": 0.2},
        "eyes": {"closed": 0.8, "normal": 0.2},
        "light": {"pastel": 0.6, "warm": 0.4},
        "objects": {"confetti": 0.4, "balloon": 0.4, "fireworks": 0.2},
    },
    "anger": {
        "mouth": {"frown": 0.8, "flat": 0.2},
        "brows": {"furrowed": 0.9, "none": 0.1},
        "eyes": {"normal": 0.7, "wide": 0.3},
        "light": {"red": 0.7, "murky": 0.3},
        "objects": {"fire": 0.35, "spikes": 0.3, "lightning": 0.2, "skull": 0.15},
    },
    "awe": {
        "mouth": {"open": 0.8, "flat": 0.2},
        "brows": {"raised": 0.9, "none": 0.1},
        "eyes": {"wide": 0.8, "normal": 0.2},
        "light": {"cold": 0.6, "night": 0.4},
        "objects": {"mountains": 0.4, "stars": 0.3, "sun": 0.2, "flowers": 0.1},
    },
    "contentment": {
        "mouth": {"smile": 0.8, "grin": 0.2},
        "brows": {"none": 0.9, "raised": 0.1},
        "eyes": {"closed": 0.8, "normal": 0.2},
        "light": {"warm": 0.6, "pastel": 0.4},
        "objects": {"sun": 0.4, "flowers": 0.3, "mountains": 0.15, "stars": 0.15},
    },
    "disgust": {
        "mouth": {"wavy": 0.8, "frown": 0.2},
        "brows": {"furrowed": 0.8, "sad": 0.2},
        "eyes": {"normal": 0.7, "closed": 0.3},
        "light": {"murky": 0.7, "red": 0.3},
        "objects": {"trash": 0.5, "spider": 0.3, "rain": 0.2},
    },
    "excitement": {
        "mouth": {"grin": 0.8, "open": 0.2},
        "brows": {"raised": 0.8, "none": 0.2},
        "eyes": {"wide": 0.8, "normal": 0.2},
        "light": {"red": 0.45, "night": 0.3, "warm": 0.25},
        "objects": {"fireworks": 0.4, "balloon": 0.3, "confetti": 0.3},
    },
    "fear": {
        "mouth": {"open": 0.7, "wavy": 0.3},
        "brows": {"raised": 0.8, "sad": 0.2},
        "eyes": {"wide": 0.7, "teary": 0.3},
        "light": {"night": 0.6, "grey": 0.4},
        "objects": {"skull": 0.25, "spikes": 0.25, "lightning": 0.25, "spider": 0.25},
    },
    "sadness": {
        "mouth": {"frown": 0.8, "flat": 0.2},
        "brows": {"sad": 0.9, "none": 0.1},
        "eyes": {"teary": 0.8, "closed": 0.2},
        "light": {"grey": 0.6, "cold": 0.4},
        "objects": {"rain": 0.7, "skull": 0.3},
    },
    "surprise": {
        "mouth": {"open": 0.85, "grin": 0.15},
        "brows": {"raised": 0.9, "none": 0.1},
        "eyes": {"wide": 0.9, "normal": 0.1},
        "light": {"pastel": 0.6, "warm": 0.4},
        "objects": {"gift": 0.5, "confetti": 0.25, "balloon": 0.25},
    },
}

# Per-domain noise: p_face = chance a face is drawn; face/light/objects = chance a cue follows the prototype table
# (otherwise it is uniform, which yields contradictions and distractors); n_objects = P(1, 2, 3 objects).
DOMAIN_NOISE: dict[str, dict[str, Any]] = {
    "photo": {"p_face": 0.75, "face": 0.85, "light": 0.9, "objects": 0.75, "n_objects": (0.3, 0.4, 0.3)},
    "art": {"p_face": 0.8, "face": 0.8, "light": 0.8, "objects": 0.75, "n_objects": (0.3, 0.4, 0.3)},
    "web": {"p_face": 0.6, "face": 0.7, "light": 0.7, "objects": 0.6, "n_objects": (0.2, 0.4, 0.4)},
}

FEELINGS: dict[str, tuple[str, ...]] = {
    "amusement": (
        "a person would feel playful and amused",
        "a person would find it funny and laugh",
        "a person would feel cheerful and entertained",
    ),
    "anger": (
        "a person would feel irritated and hostile",
        "a person would feel furious and provoked",
        "a person would feel outraged and ready to fight",
    ),
    "awe": (
        "a person would feel small before something vast",
        "a person would feel amazed and reverent",
        "a person would feel humbled and moved by grandeur",
    ),
    "contentment": (
        "a person would feel calm and satisfied",
        "a person would feel peaceful and at ease",
        "a person would feel quietly happy and safe",
    ),
    "disgust": (
        "a person would feel repulsed and sick",
        "a person would want to turn away from something filthy",
        "a person would feel revolted and nauseous",
    ),
    "excitement": (
        "a person would feel thrilled and energized",
        "a person would feel eager and full of energy",
        "a person would feel exhilarated and hyped",
    ),
    "fear": (
        "a person would feel threatened and scared",
        "a person would feel terrified and want to flee",
        "a person would feel anxious about danger",
    ),
    "sadness": (
        "a person would feel lonely and sorrowful",
        "a person would feel down and heartbroken",
        "a person would feel a sense of loss and grief",
    ),
    "surprise": (
        "a person would feel startled by something unexpected",
        "a person would feel astonished and caught off guard",
        "a person would feel shocked by a sudden event",
    ),
}


@dataclass(frozen=True)
class Scene:
    """One sampled scene: its latent emotion, the domain label, and the visible cues the renderer draws."""

    domain: str
    latent: str
    label: str
    valence: float
    arousal: float
    face: dict[str, str] | None
    light: str
    objects: tuple[str, ...]


def _agreement(p: float, noise: float) -> float:
    """Scale the disagreement rate so noise=0 is pure prototype and noise=1 is the domain default."""
    return 1.0 - noise * (1.0 - p)


def _table(latent: str, family: str) -> np.ndarray:
    """Prototype probability vector of one cue family, in the order of that family's value tuple."""
    values = {**FACE_PARTS, "light": LIGHTS, "objects": OBJECTS}[family]
    proto = PROTOTYPES[latent][family]
    return np.array([proto.get(v, 0.0) for v in values])


@lru_cache(maxsize=64)
def _probs(domain: str, family: str, noise: float) -> np.ndarray:
    """Mixture P(value | latent) for every latent of the domain: [n_latents, n_values]."""
    key = "face" if family in FACE_PARTS else family
    agree = _agreement(DOMAIN_NOISE[domain][key], noise)
    tables = np.stack([_table(x, family) for x in DOMAIN_LATENTS[domain]])
    return agree * tables + (1.0 - agree) / tables.shape[1]


def latent_for_label(rng: np.random.Generator, domain: str, label: str) -> str:
    """Pick uniformly among the latents that map to a domain label."""
    options = [x for x in DOMAIN_LATENTS[domain] if LATENT_TO_LABEL[domain][x] == label]
    return options[int(rng.integers(len(options)))]


def sample_scene(rng: np.random.Generator, domain: str, latent: str | None = None, noise: float = 1.0) -> Scene:
    """Sample a scene; the label is uniform within the domain, then the latent uniform among its sources.

    ``noise`` scales every cue's disagreement rate (1 = domain default, 0 = pure prototype); text tasks use < 1.
    """
    if domain not in LABELS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    if latent is None:
        latent = latent_for_label(rng, domain, LABELS[domain][int(rng.integers(len(LABELS[domain])))])
    elif latent not in DOMAIN_LATENTS[domain]:
        raise ValueError(f"latent {latent!r} is not used in domain {domain!r}")
    row = DOMAIN_LATENTS[domain].index(latent)
    cfg = DOMAIN_NOISE[domain]
    face = None
    if rng.random() < cfg["p_face"]:
        face = {
            part: values[rng.choice(len(values), p=_probs(domain, part, noise)[row])]
            for part, values in FACE_PARTS.items()
        }
    light = LIGHTS[rng.choice(len(LIGHTS), p=_probs(domain, "light", noise)[row])]
    k = 1 + int(rng.choice(3, p=cfg["n_objects"]))
    p_obj = _probs(domain, "objects", noise)[row]
    while True:  # rejection keeps draws iid-with-distinctness, which bayes_accuracy models exactly
        idx = rng.choice(len(OBJECTS), size=k, p=p_obj)
        if len(set(idx.tolist())) == k:
            break
    objects = tuple(OBJECTS[i] for i in sorted(idx.tolist()))  # canonical order: equal cue sets give equal text
    valence, arousal = VALENCE_AROUSAL[latent]
    label = LATENT_TO_LABEL[domain][latent]
    return Scene(domain, latent, label, valence, arousal, face, light, objects)


def _join(words: list[str]) -> str:
    """English list: 'a', 'a and b', 'a, b and c'."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


_MOUTH_WORDS = {
    "smile": "a smile",
    "grin": "a grin",
    "frown": "a frown",
    "open": "an open mouth",
    "flat": "a flat mouth",
    "wavy": "a wavy mouth",
}


def describe_face(face: dict[str, str] | None) -> str:
    """Face clause of the description, e.g. 'a face with a frown, furrowed brows and wide eyes'."""
    if face is None:
        return "no face"
    parts = [_MOUTH_WORDS[face["mouth"]]]
    if face["brows"] != "none":
        parts.append(f"{face['brows']} brows")
    parts.append(f"{face['eyes']} eyes")
    return "a face with " + _join(parts)


def describe_objects(objects: tuple[str, ...] | list[str]) -> str:
    """Object clause, e.g. 'spikes and fire'."""
    return _join(list(objects))


def describe(scene: Scene) -> str:
    """Deterministic plain-words cue description (EMO-R3 step 1 and the 'describe' training target)."""
    return f"{describe_face(scene.face)}. {scene.light} light. {describe_objects(scene.objects)}."


def feeling(latent: str, rng: np.random.Generator | None = None) -> str:
    """How a person would feel (EMO-R3 step 2); rng picks one of a few phrasings, None gives the first."""
    options = FEELINGS[latent]
    return options[0] if rng is None else options[int(rng.integers(len(options)))]


def polarity_arousal(latent: str) -> str:
    """EMO-R3 step 3: valence sign and arousal, binary at AROUSAL_THRESHOLD so it matches the web quadrants."""
    valence, arousal = VALENCE_AROUSAL[latent]
    polarity = "positive" if valence >= 0 else "negative"
    level = "high" if arousal >= AROUSAL_THRESHOLD else "low"
    return f"the emotion is {polarity} with {level} arousal"


def cues_json(scene: Scene) -> str:
    """Cues as a JSON string (stable key order) for dataset columns."""
    return json.dumps({"face": scene.face, "light": scene.light, "objects": list(scene.objects)}, sort_keys=True)


def scene_row(scene: Scene, image: Any) -> dict[str, Any]:
    """Dataset row for one rendered scene."""
    return {
        "image": image,
        "domain": scene.domain,
        "label": scene.label,
        "labels": list(LABELS[scene.domain]),
        "latent": scene.latent,
        "valence": scene.valence,
        "arousal": scene.arousal,
        "cues": cues_json(scene),
        "description": describe(scene),
    }


@lru_cache(maxsize=64)
def _set_norm(domain: str, noise: float, k: int) -> np.ndarray:
    """P(k iid object draws are all distinct | latent), the rejection-sampling normaliser, per latent."""
    p = _probs(domain, "objects", noise)
    s2, s3 = (p**2).sum(1), (p**3).sum(1)
    return {1: np.ones(len(p)), 2: 1.0 - s2, 3: 1.0 - 3.0 * s2 + 2.0 * s3}[k]


def cue_log_likelihood(scene: Scene, domain: str, use: tuple[str, ...], noise: float = 1.0) -> np.ndarray:
    """log P(observed cues | latent) for each latent of ``domain`` (a missing face carries no evidence)."""
    out = np.zeros(len(DOMAIN_LATENTS[domain]))
    if "face" in use and scene.face is not None:
        for part, values in FACE_PARTS.items():
            out += np.log(_probs(domain, part, noise)[:, values.index(scene.face[part])])
    if "light" in use:
        out += np.log(_probs(domain, "light", noise)[:, LIGHTS.index(scene.light)])
    if "objects" in use:
        p = _probs(domain, "objects", noise)
        idx = [OBJECTS.index(o) for o in scene.objects]
        total = sum(np.prod(p[:, list(perm)], axis=1) for perm in itertools.permutations(idx))
        out += np.log(total / _set_norm(domain, noise, len(idx)))
    return out


def label_posterior(
    scene: Scene, use: tuple[str, ...] = ("face", "light", "objects"), noise: float = 1.0
) -> dict[str, float]:
    """Exact posterior over the domain's labels given the cues, with the balanced-label prior of sample_scene."""
    domain = scene.domain
    latents = DOMAIN_LATENTS[domain]
    labels = [LATENT_TO_LABEL[domain][x] for x in latents]
    log_prior = np.log([1.0 / (len(LABELS[domain]) * labels.count(lab)) for lab in labels])
    logp = cue_log_likelihood(scene, domain, use, noise) + log_prior
    post = np.exp(logp - logp.max())
    post /= post.sum()
    return {lab: float(sum(q for q, x in zip(post, labels, strict=True) if x == lab)) for lab in LABELS[domain]}


def bayes_accuracy(
    domain: str, n: int, seed: int, use: tuple[str, ...] = ("face", "light", "objects"), noise: float = 1.0
) -> float:
    """Monte-Carlo accuracy of the Bayes-optimal label from the true cues: the ceiling for any image model."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n):
        scene = sample_scene(rng, domain, noise=noise)
        post = label_posterior(scene, use, noise)
        hits += max(post, key=post.get) == scene.label
    return hits / n
