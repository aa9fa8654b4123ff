"""Draw EmoScenes as 48x48 RGB images: three renderers (photo, art, web) with the same cue semantics.

Scenes are drawn at 96x96 and downsampled with LANCZOS so thin strokes survive as antialiased pixels; every cue is
sized so a patch-6 ViT at 48x48 can still see it (face ~20 px wide, objects 12-16 px). All randomness comes from
the rng argument, so a (scene, rng state) pair always gives the same pixels.
"""

from __future__ import annotations

import colorsys
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mllmtune.world.scenes import Scene

SIZE = 48
CANVAS = 96
Color = tuple[int, int, int]
Layout = list[tuple[str, float, float, float]]

# Photo palettes per light: (sky top, sky at horizon, ground).
PALETTES: dict[str, tuple[Color, Color, Color]] = {
    "warm": ((255, 160, 60), (255, 220, 130), (205, 135, 70)),
    "cold": ((110, 165, 230), (205, 230, 250), (150, 185, 215)),
    "red": ((160, 15, 15), (235, 70, 45), (95, 15, 15)),
    "grey": ((105, 105, 110), (170, 170, 175), (85, 85, 90)),
    "pastel": ((250, 185, 230), (200, 230, 255), (185, 240, 200)),
    "murky": ((65, 80, 35), (125, 120, 55), (80, 62, 30)),
    "night": ((5, 8, 35), (35, 45, 105), (15, 18, 35)),
}
DARK_LIGHTS = frozenset({"red", "murky", "night"})
INK: Color = (35, 22, 18)
SKIN: Color = (250, 214, 160)


@dataclass(frozen=True)
class Style:
    """How icons are painted: photo gives every part a thin edge, art paints flat parts (outlined as a whole)."""

    edge: Color | None
    edge_w: int
    recolor: Callable[[Color], Color]


def _identity(c: Color) -> Color:
    return c


@lru_cache(maxsize=512)
def _poster(c: Color) -> Color:
    """Art palette: hue rotated and saturation pushed, so art colours differ from photo but keep their role."""
    h, s, v = colorsys.rgb_to_hsv(*(x / 255 for x in c))
    h, s = (h + 0.06) % 1.0, min(1.0, s * 1.3 + 0.05 if s > 0.1 else s)
    return tuple(int(round(x * 255)) for x in colorsys.hsv_to_rgb(h, s, v))  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------------
# primitives


def _poly(d: ImageDraw.ImageDraw, st: Style, pts: list[tuple[float, float]], color: Color) -> None:
    d.polygon(pts, fill=st.recolor(color), outline=st.edge, width=st.edge_w)


def _oval(d: ImageDraw.ImageDraw, st: Style, box: tuple[float, float, float, float], color: Color) -> None:
    d.ellipse(box, fill=st.recolor(color), outline=st.edge, width=st.edge_w)


def _line(d: ImageDraw.ImageDraw, st: Style, pts: list[tuple[float, float]], color: Color, w: float) -> None:
    d.line(pts, fill=st.recolor(color), width=max(1, round(w)), joint="curve")


def _circle(cx: float, cy: float, r: float) -> tuple[float, float, float, float]:
    return (cx - r, cy - r, cx + r, cy + r)


def _star_pts(cx: float, cy: float, r: float, rot: float = 0.0, n: int = 5) -> list[tuple[float, float]]:
    pts = []
    for i in range(2 * n):
        rad = r if i % 2 == 0 else r * 0.45
        a = rot - math.pi / 2 + i * math.pi / n
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


# ----------------------------------------------------------------------------------------------------------------
# object icons: each draws inside the circle (cx, cy, r); shapes are given in units of r around the centre

Pts = list[tuple[float, float]]
_BRIGHT: tuple[Color, ...] = (
    (235, 40, 60),
    (40, 200, 80),
    (40, 120, 255),
    (255, 215, 0),
    (200, 60, 220),
    (0, 210, 220),
)


def _at(cx: float, cy: float, r: float, rel: Pts) -> Pts:
    """Map unit-relative points to canvas points."""
    return [(cx + x * r, cy + y * r) for x, y in rel]


def _box(x0: float, y0: float, x1: float, y1: float) -> Pts:
    """Unit-relative rectangle as a polygon."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _sun(d, st, cx, cy, r, rng) -> None:
    w = max(2.0, 0.14 * r)
    for i in range(8):
        c, s = math.cos(i * math.pi / 4), math.sin(i * math.pi / 4)
        _line(d, st, _at(cx, cy, r, [(0.62 * c, 0.62 * s), (c, s)]), (255, 190, 0), w)
    _oval(d, st, _circle(cx, cy, 0.5 * r), (255, 215, 0))


def _rain(d, st, cx, cy, r, rng) -> None:
    w = max(2.0, 0.13 * r)
    for i in range(4):
        x = -0.6 + i * 0.4
        _line(d, st, _at(cx, cy, r, [(x, 0.15), (x - 0.2, 0.95)]), (30, 110, 255), w)
    for ox, oy, rr in ((-0.45, -0.2, 0.38), (0.0, -0.45, 0.48), (0.45, -0.2, 0.38)):
        _oval(d, st, _circle(cx + ox * r, cy + oy * r, rr * r), (125, 125, 140))


def _spikes(d, st, cx, cy, r, rng) -> None:
    for i in range(3):
        x0 = -1 + i * 2 / 3
        _poly(d, st, _at(cx, cy, r, [(x0, 0.7), (x0 + 1 / 3, -0.9), (x0 + 2 / 3, 0.7)]), (95, 95, 110))
    _poly(d, st, _at(cx, cy, r, _box(-1, 0.7, 1, 0.95)), (60, 60, 70))


def _fireworks(d, st, cx, cy, r, rng) -> None:
    w = max(2.0, 0.12 * r)
    off = float(rng.uniform(0, math.pi))
    for i in range(12):
        c, s = math.cos(off + i * math.pi / 6), math.sin(off + i * math.pi / 6)
        _line(d, st, _at(cx, cy, r, [(0.25 * c, 0.25 * s), (c, s)]), _BRIGHT[i % len(_BRIGHT)], w)
    d.ellipse(_circle(cx, cy, 0.16 * r), fill=st.recolor((255, 255, 220)))


def _mountains(d, st, cx, cy, r, rng) -> None:
    _poly(d, st, _at(cx, cy, r, [(-1, 0.8), (-0.35, -0.45), (0.3, 0.8)]), (120, 105, 120))
    _poly(d, st, _at(cx, cy, r, [(-0.4, 0.8), (0.3, -0.95), (1, 0.8)]), (95, 90, 110))
    _poly(d, st, _at(cx, cy, r, [(0.3, -0.95), (0.07, -0.4), (0.53, -0.4)]), (250, 250, 255))


def _confetti(d, st, cx, cy, r, rng) -> None:
    s = 0.2 * r
    for i in range(12):
        a, rad = rng.uniform(0, 2 * math.pi), r * math.sqrt(rng.uniform(0.02, 0.8))
        x, y = cx + rad * math.cos(a), cy + rad * math.sin(a)
        hw, hh = (s, 0.6 * s) if i % 2 else (0.6 * s, s)
        d.rectangle((x - hw, y - hh, x + hw, y + hh), fill=st.recolor(_BRIGHT[i % len(_BRIGHT)]))


def _flowers(d, st, cx, cy, r, rng) -> None:
    fy = -0.25
    _line(d, st, _at(cx, cy, r, [(0, fy), (0, 1)]), (40, 150, 40), max(2.0, 0.14 * r))
    _poly(d, st, _at(cx, cy, r, [(0, 0.6), (0.5, 0.3), (0.15, 0.75)]), (40, 170, 50))
    for i in range(6):
        a = i * math.pi / 3
        _oval(d, st, _circle(cx + 0.4 * r * math.cos(a), cy + (fy + 0.4 * math.sin(a)) * r, 0.27 * r), (255, 90, 170))
    _oval(d, st, _circle(cx, cy + fy * r, 0.22 * r), (255, 220, 0))


_BOLT: Pts = [(0.15, -1.0), (-0.55, 0.1), (-0.05, 0.1), (-0.3, 1.0), (0.55, -0.2), (0.05, -0.2), (0.45, -1.0)]


def _lightning(d, st, cx, cy, r, rng) -> None:
    _poly(d, st, _at(cx, cy, r, _BOLT), (255, 235, 30))


def _spider(d, st, cx, cy, r, rng) -> None:
    w = max(2.0, 0.12 * r)
    for side in (-1, 1):
        for k in range(4):
            a = -0.75 + k * 0.5
            leg = [(0, 0), (side * 0.6, a * 0.7 - 0.25), (side * 0.95, a * 1.1 + 0.2)]
            _line(d, st, _at(cx, cy, r, leg), (15, 15, 15), w)
    _oval(d, st, (cx - 0.38 * r, cy - 0.3 * r, cx + 0.38 * r, cy + 0.5 * r), (20, 20, 20))
    _oval(d, st, _circle(cx, cy - 0.45 * r, 0.22 * r), (20, 20, 20))
    for sx in (-1, 1):
        d.ellipse(_circle(cx + sx * 0.09 * r, cy - 0.5 * r, 0.06 * r + 0.5), fill=(230, 30, 30))


def _skull(d, st, cx, cy, r, rng) -> None:
    bone = (240, 238, 225)
    _poly(d, st, _at(cx, cy, r, [(-0.4, 0.2), (0.4, 0.2), (0.35, 0.85), (-0.35, 0.85)]), bone)
    _oval(d, st, (cx - 0.75 * r, cy - 0.9 * r, cx + 0.75 * r, cy + 0.5 * r), bone)
    hole = st.recolor((20, 20, 20))
    for sx in (-1, 1):
        d.ellipse(_circle(cx + sx * 0.33 * r, cy - 0.15 * r, 0.22 * r), fill=hole)
    d.polygon(_at(cx, cy, r, [(0, 0.1), (-0.1, 0.3), (0.1, 0.3)]), fill=hole)
    for k in (-1, 0, 1):
        d.line(_at(cx, cy, r, [(k * 0.17, 0.55), (k * 0.17, 0.85)]), fill=hole, width=max(1, round(0.08 * r)))


def _trash(d, st, cx, cy, r, rng) -> None:
    w = max(2.0, 0.12 * r)
    _poly(d, st, _at(cx, cy, r, [(-0.55, -0.3), (0.55, -0.3), (0.42, 1), (-0.42, 1)]), (110, 125, 100))
    _poly(d, st, _at(cx, cy, r, _box(-0.7, -0.5, 0.7, -0.3)), (80, 95, 75))
    for k in (-1, 0, 1):
        _line(d, st, _at(cx, cy, r, [(k * 0.22, -0.1), (k * 0.2, 0.8)]), (70, 80, 65), w * 0.7)
    for k in (-1, 1):  # stink lines
        pts = [(k * 0.35 + 0.12 * math.sin(t * 2.2), -0.6 - t * 0.13) for t in range(4)]
        _line(d, st, _at(cx, cy, r, pts), (150, 200, 30), w)


_FLAME: Pts = [(-0.7, 0.3), (-0.55, -0.35), (-0.3, -0.05), (-0.1, -1), (0.2, -0.3), (0.45, -0.65), (0.7, 0.3)]
_FLAME += [(0.4, 0.9), (-0.4, 0.9)]
_FLAME_CORE: Pts = [(-0.35, 0.45), (-0.05, -0.3), (0.35, 0.45), (0, 0.8)]


def _fire(d, st, cx, cy, r, rng) -> None:
    _poly(d, st, _at(cx, cy, r, _FLAME), (240, 60, 0))
    _poly(d, st, _at(cx, cy, r, _FLAME_CORE), (255, 215, 0))


def _stars(d, st, cx, cy, r, rng) -> None:
    for ox, oy, rr in ((-0.3, 0.2, 0.62), (0.5, -0.5, 0.42), (0.55, 0.6, 0.3)):
        _poly(d, st, _star_pts(cx + ox * r, cy + oy * r, rr * r, rot=float(rng.uniform(-0.3, 0.3))), (255, 245, 120))


def _gift(d, st, cx, cy, r, rng) -> None:
    gold = (255, 215, 0)
    _poly(d, st, _at(cx, cy, r, _box(-0.75, -0.35, 0.75, 0.85)), (40, 90, 230))
    w = max(2.0, 0.2 * r)
    _line(d, st, _at(cx, cy, r, [(0, -0.35), (0, 0.85)]), gold, w)
    _line(d, st, _at(cx, cy, r, [(-0.75, 0.25), (0.75, 0.25)]), gold, w)
    for sx in (-1, 1):
        _poly(d, st, _at(cx, cy, r, [(0, -0.4), (sx * 0.5, -0.85), (sx * 0.5, -0.35)]), gold)


def _balloon(d, st, cx, cy, r, rng) -> None:
    red = (235, 30, 60)
    _line(d, st, _at(cx, cy, r, [(0, 0.4), (-0.15, 0.7), (0.05, 1)]), (60, 60, 60), max(1.5, 0.08 * r))
    _oval(d, st, (cx - 0.5 * r, cy - r, cx + 0.5 * r, cy + 0.35 * r), red)
    _poly(d, st, _at(cx, cy, r, [(0, 0.3), (-0.12, 0.45), (0.12, 0.45)]), red)
    d.ellipse(_circle(cx - 0.2 * r, cy - 0.55 * r, 0.1 * r), fill=st.recolor((255, 180, 190)))


def _tree(d, st, cx, cy, r, rng) -> None:
    _poly(d, st, _at(cx, cy, r, _box(-0.15, 0, 0.15, 1)), (120, 75, 30))
    _oval(d, st, (cx - 0.65 * r, cy - r, cx + 0.65 * r, cy + 0.35 * r), (40, 150, 50))


def _house(d, st, cx, cy, r, rng) -> None:
    _poly(d, st, _at(cx, cy, r, _box(-0.65, -0.1, 0.65, 0.9)), (225, 205, 160))
    _poly(d, st, _at(cx, cy, r, [(-0.85, -0.05), (0, -0.9), (0.85, -0.05)]), (170, 50, 40))
    _poly(d, st, _at(cx, cy, r, _box(-0.15, 0.4, 0.15, 0.9)), (110, 70, 30))


def _ball(d, st, cx, cy, r, rng) -> None:
    box = _circle(cx, cy, 0.75 * r)
    d.ellipse(box, fill=st.recolor((250, 250, 250)))
    for a0, c in ((30, (230, 40, 40)), (150, (40, 90, 230)), (270, (255, 210, 0))):
        d.pieslice(box, a0, a0 + 60, fill=st.recolor(c))
    d.ellipse(box, outline=st.edge, width=st.edge_w)


ICONS: dict[str, Callable[..., None]] = {
    "sun": _sun,
    "rain": _rain,
    "spikes": _spikes,
    "fireworks": _fireworks,
    "mountains": _mountains,
    "confetti": _confetti,
    "flowers": _flowers,
    "lightning": _lightning,
    "spider": _spider,
    "skull": _skull,
    "trash": _trash,
    "fire": _fire,
    "stars": _stars,
    "gift": _gift,
    "balloon": _balloon,
    "tree": _tree,
    "house": _house,
    "ball": _ball,
}

# ----------------------------------------------------------------------------------------------------------------
# face


def _face_features(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, face: dict[str, str], ink: Color) -> None:
    """Eyes, brows and mouth; shapes are kept far apart (up/down curve, filled o, line, wave) to survive 48 px."""
    lw = max(3, round(0.14 * r))
    ey = cy - 0.12 * r
    for sx in (-1, 1):
        ex = cx + sx * 0.38 * r
        eyes = face["eyes"]
        if eyes == "wide":
            d.ellipse(_circle(ex, ey, 0.22 * r), fill=(255, 255, 255), outline=ink, width=max(2, lw - 1))
            d.ellipse(_circle(ex, ey, 0.1 * r), fill=ink)
        elif eyes == "closed":
            d.arc(_circle(ex, ey + 0.08 * r, 0.17 * r), 200, 340, fill=ink, width=lw)
        else:
            d.ellipse(_circle(ex, ey, 0.12 * r), fill=ink)
        if eyes == "teary":
            d.ellipse((ex - 0.12 * r, ey + 0.16 * r, ex + 0.12 * r, ey + 0.55 * r), fill=(30, 120, 255))
        brows = face["brows"]
        inner, outer = ex - sx * 0.2 * r, ex + sx * 0.22 * r
        by = cy - 0.48 * r
        if brows == "raised":
            d.arc(_circle(ex, by + 0.02 * r, 0.22 * r), 205, 335, fill=ink, width=lw)
        elif brows == "furrowed":
            d.line([(outer, by - 0.12 * r), (inner, by + 0.1 * r)], fill=ink, width=lw)
        elif brows == "sad":
            d.line([(outer, by + 0.1 * r), (inner, by - 0.12 * r)], fill=ink, width=lw)
    my, mw = cy + 0.45 * r, 0.42 * r
    mouth = face["mouth"]
    if mouth == "smile":
        d.arc((cx - mw, my - 0.35 * r, cx + mw, my + 0.15 * r), 15, 165, fill=ink, width=lw)
    elif mouth == "grin":
        d.chord((cx - 0.48 * r, my - 0.3 * r, cx + 0.48 * r, my + 0.32 * r), 0, 180, fill=ink)
        d.rectangle((cx - 0.32 * r, my + 0.01 * r, cx + 0.32 * r, my + 0.1 * r), fill=(255, 255, 255))
    elif mouth == "frown":
        d.arc((cx - mw, my - 0.05 * r, cx + mw, my + 0.45 * r), 195, 345, fill=ink, width=lw)
    elif mouth == "open":
        d.ellipse((cx - 0.17 * r, my - 0.2 * r, cx + 0.17 * r, my + 0.24 * r), fill=ink)
    elif mouth == "flat":
        d.line([(cx - mw, my + 0.05 * r), (cx + mw, my + 0.05 * r)], fill=ink, width=lw)
    else:  # wavy
        pts = [(cx - mw + 2 * mw * t / 12, my + 0.1 * r * math.sin(t / 12 * 4 * math.pi)) for t in range(13)]
        d.line(pts, fill=ink, width=lw, joint="curve")


# ----------------------------------------------------------------------------------------------------------------
# layout and renderers


def _layout(scene: Scene, rng: np.random.Generator) -> list[tuple[str, float, float, float]]:
    """Random non-overlapping (kind, cx, cy, r) slots on the 96 px canvas; 'face' first, then the objects."""
    kinds = (["face"] if scene.face is not None else []) + list(scene.objects)
    placed: list[tuple[str, float, float, float]] = []
    for kind in kinds:
        r = float(rng.uniform(19, 23) if kind == "face" else rng.uniform(12, 16))
        for attempt in range(40):
            rr = r * (1.0 - 0.006 * attempt)
            x, y = rng.uniform(rr + 1, CANVAS - rr - 1, size=2)
            if all(math.hypot(x - px, y - py) >= rr + pr - 1 for _, px, py, pr in placed):
                break
        placed.append((kind, float(x), float(y), rr))
    return placed


def _gradient(top: Color, mid: Color, ground: Color, horizon: int) -> np.ndarray:
    """Vertical sky gradient down to the horizon, then a flat ground band with slight shading."""
    t = np.clip(np.arange(CANVAS) / max(horizon, 1), 0, 1)[:, None]
    sky = (1 - t) * np.array(top) + t * np.array(mid)
    g = np.array(ground) * (1 + 0.15 * (np.arange(CANVAS)[:, None] - horizon) / CANVAS)
    rows = np.where(np.arange(CANVAS)[:, None] < horizon, sky, g)
    return np.broadcast_to(np.clip(rows, 0, 255)[:, None, :], (CANVAS, CANVAS, 3))


def _jitter(c: Color, rng: np.random.Generator, amount: int = 12) -> Color:
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in c)  # type: ignore[return-value]


def _finish(img: Image.Image) -> Image.Image:
    return img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def _record(layout: Layout | None, slots: Layout) -> None:
    """Append the drawn slots to `layout` in output-pixel coordinates (the canvas is drawn at twice the size)."""
    if layout is not None:
        scale = SIZE / CANVAS
        layout.extend((kind, cx * scale, cy * scale, r * scale) for kind, cx, cy, r in slots)


def render_photo(scene: Scene, rng: np.random.Generator, layout: Layout | None = None) -> Image.Image:
    """Photo style: sky/ground gradient from the light palette, round face, filled icons with a thin edge."""
    top, mid, ground = (_jitter(c, rng) for c in PALETTES[scene.light])
    bg = _gradient(top, mid, ground, int(rng.integers(56, 78)))
    img = Image.fromarray(bg.astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    dark = scene.light in DARK_LIGHTS
    st = Style(edge=(225, 225, 225) if dark else (30, 25, 25), edge_w=2, recolor=_identity)
    slots = _layout(scene, rng)
    _record(layout, slots)
    for kind, cx, cy, r in slots:
        if kind == "face":
            d.ellipse(_circle(cx, cy, r), fill=_jitter(SKIN, rng, 8), outline=st.edge if dark else INK, width=3)
            _face_features(d, cx, cy, r, scene.face, INK)
        else:
            ICONS[kind](d, st, cx, cy, r, rng)
    return _finish(img)


def _stripes(a: Color, b: Color, rng: np.random.Generator) -> np.ndarray:
    """Poster background: two-tone stripes at a random angle and width, plus a soft brush-like value ripple."""
    y, x = np.mgrid[0:CANVAS, 0:CANVAS]
    ang = rng.uniform(0, math.pi)
    width = rng.uniform(6, 12)
    phase = (x * math.cos(ang) + y * math.sin(ang)) / width + 0.35 * np.sin(y / rng.uniform(5, 9))
    mask = (np.floor(phase) % 2 == 0)[..., None]
    return np.where(mask, np.array(a), np.array(b))


def render_art(scene: Scene, rng: np.random.Generator, layout: Layout | None = None) -> Image.Image:
    """Art style: striped poster background in hue-shifted colours, square/diamond face, flat icons with one thick
    silhouette outline (white on dark posters) instead of photo's per-part edges."""
    top, mid, _ = (_poster(_jitter(c, rng)) for c in PALETTES[scene.light])
    img = Image.fromarray(_stripes(top, mid, rng).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    ink: Color = (0, 0, 0)
    edge: Color = (255, 255, 255) if scene.light in DARK_LIGHTS else ink
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    ld = ImageDraw.Draw(layer)
    st = Style(edge=None, edge_w=0, recolor=_poster)
    slots = _layout(scene, rng)
    _record(layout, slots)
    for kind, cx, cy, r in slots:
        if kind == "face":
            skin = _poster(_jitter((255, 225, 120), rng, 10))
            if rng.random() < 0.5:
                d.rectangle(_circle(cx, cy, 0.9 * r), fill=skin, outline=edge, width=5)
            else:
                diamond = _at(cx, cy, r, [(0, -1.1), (1.1, 0), (0, 1.1), (-1.1, 0)])
                d.polygon(diamond, fill=skin, outline=edge, width=5)
            _face_features(d, cx, cy, 0.92 * r, scene.face, ink)
        else:
            ICONS[kind](ld, st, cx, cy, r, rng)
    alpha = layer.getchannel("A")
    img.paste(edge, (0, 0, CANVAS, CANVAS), alpha.filter(ImageFilter.MaxFilter(7)))
    img.paste(layer, (0, 0), alpha)
    return _finish(img)


def degrade(img: Image.Image, rng: np.random.Generator, layout: Layout | None = None) -> Image.Image:
    """Web-style damage: random crop-and-rescale, an occluding box, blur, sensor noise, low-quality JPEG."""
    s = SIZE
    crop = int(rng.integers(int(0.8 * s), s + 1))
    x0, y0 = (int(v) for v in rng.integers(0, s - crop + 1, size=2))
    img = img.crop((x0, y0, x0 + crop, y0 + crop)).resize((s, s), Image.Resampling.BILINEAR)
    if layout:  # follow the crop: slots move and grow with the rescale
        k = s / crop
        layout[:] = [(kind, (cx - x0) * k, (cy - y0) * k, r * k) for kind, cx, cy, r in layout]
    if rng.random() < 0.7:
        w, h = (int(v) for v in rng.integers(5, 13, size=2))
        ox, oy = (int(v) for v in rng.integers(0, s - 4, size=2))
        ImageDraw.Draw(img).rectangle((ox, oy, ox + w, oy + h), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    if rng.random() < 0.6:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.9))))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(3, 12), size=(s, s, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(15, 41)))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def render_web(scene: Scene, rng: np.random.Generator, layout: Layout | None = None) -> Image.Image:
    """Web style: a photo rendering passed through degrade()."""
    return degrade(render_photo(scene, rng, layout), rng, layout)


RENDERERS: dict[str, Callable[..., Image.Image]] = {
    "photo": render_photo,
    "art": render_art,
    "web": render_web,
}


def render(scene: Scene, rng: np.random.Generator, layout: Layout | None = None) -> Image.Image:
    """Render a scene as a 48x48 RGB image in its domain's style (deterministic for the rng state).

    Given a list, `layout` receives one `(kind, cx, cy, r)` per drawn face or object in output pixels: the
    vision tower's dense heads learn what lies under each patch from it. Passing it never changes the pixels.
    """
    return RENDERERS[scene.domain](scene, rng, layout)
