"""Paired bootstrap intervals for E, F and O against the zero-shot baseline.

Written with numpy instead of ``scipy.stats.bootstrap``: scipy handles a paired statistic over one set of samples,
but O = E + F joins two different sample sets (the in-domain target and the retention benchmarks, each resampled on
its own indices) within one draw, which its API cannot express.

Each benchmark's items are resampled jointly for the tuned runs and the baseline (a paired bootstrap, items paired
by their stable id, see :func:`pair`). Per-item scores are kept as they are: 0/1 for accuracy, a fraction for VQA soft
accuracy or F1. With several seeds the bootstrap has two levels: each draw first resamples the seeds (with
replacement; the same seed draw for every benchmark, since a seed is one run scored on all of them), then the items,
so the interval holds seed-to-seed spread as well as item sampling. With one seed it is item-level only, and
`Intervals.levels` says which. The RNG seed is fixed, and each group gets a fresh generator, so a row's interval does
not depend on which other rows the report holds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DRAWS = 2000
LEVEL = 0.95
SEED = 0
_CHUNK_CELLS = 4_000_000  # indices per chunk (~32 MB), so a 10k-sample benchmark does not need 160 MB at once


@dataclass(frozen=True)
class Paired:
    """One benchmark's per-item scores: ``tuned`` is (seeds, n), ``base`` is (n,), in the same item order."""

    tuned: np.ndarray
    base: np.ndarray

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        tuned = np.atleast_2d(np.asarray(self.tuned, dtype=float))
        base = np.asarray(self.base, dtype=float)
        if tuned.shape[1] != base.shape[0] or base.size == 0:
            raise ValueError(f"tuned {tuned.shape} and base {base.shape} do not pair item by item")
        return tuned, base

    def diff(self) -> np.ndarray:
        """Per-item difference in points, averaged over seeds."""
        tuned, base = self.arrays()
        return 100.0 * (tuned.mean(axis=0) - base)


@dataclass
class Intervals:
    """Percentile intervals ``(lo, hi)`` for E, F, O and each benchmark's own difference."""

    E: tuple[float, float] | None = None
    F: tuple[float, float] | None = None
    O: tuple[float, float] | None = None  # noqa: E741
    per_benchmark: dict[str, tuple[float, float]] = field(default_factory=dict)
    levels: str = "items"  # "items", or "seeds+items" for the two-level bootstrap over several seeds


@dataclass(frozen=True)
class Scores:
    """One predictions file: item ids in file order and each item's score (bool as 0/1, fractions kept)."""

    ids: tuple[str, ...]
    values: np.ndarray


def _score(value) -> float:
    if isinstance(value, bool | int | float) and not (isinstance(value, float) and value != value):
        return float(value)
    raise TypeError(f"per-item score {value!r} is not a number")


def read_scores(path: Path) -> Scores | None:
    """Ids and per-item scores of a predictions file; ``None`` if absent, empty or damaged.

    Files written before items had ids pair by their `index` (their position), as they always did.
    """
    ids, values = [], []
    try:
        with path.open(encoding="utf-8") as handle:
            for n, line in enumerate(handle):
                if not line.strip():
                    continue
                row = json.loads(line)
                values.append(_score(row["correct"]))
                ids.append(str(row["id"]) if row.get("id") is not None else f"#{row.get('index', n)}")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Scores(tuple(ids), np.array(values, dtype=float)) if values else None


def read_correct(path: Path) -> np.ndarray | None:
    """The per-item scores of a predictions file in file order (fractions kept); ``None`` if absent or damaged."""
    scores = read_scores(path)
    return None if scores is None else scores.values


def pair(tuned: Sequence[Scores], base: Scores) -> Paired | str:
    """Align runs' per-item scores with the baseline's by item id; a reason (one line) when they do not pair."""
    if len(set(base.ids)) != len(base.ids):
        return "the baseline's predictions repeat an item id"
    rows = []
    for run in tuned:
        by_id = dict(zip(run.ids, run.values, strict=True))
        if len(by_id) != len(run.ids) or by_id.keys() != set(base.ids):
            missing, extra = set(base.ids) - by_id.keys(), by_id.keys() - set(base.ids)
            return (
                f"the run and its baseline scored different items ({len(missing)} of the baseline's missing, "
                f"{len(extra)} not in it, {len(run.ids) - len(by_id)} repeated)"
            )
        rows.append([by_id[i] for i in base.ids])
    return Paired(np.array(rows, dtype=float), base.values)


def _mean_draws(
    tuned: np.ndarray, base: np.ndarray, rng: np.random.Generator, draws: int, seed_weights: np.ndarray | None
) -> np.ndarray:
    """Bootstrap means of the per-item difference in points: ``draws`` resamples of the items with replacement,
    each over the seeds weighted as that draw's seed resample says (``None``: the plain mean over seeds)."""
    n = base.shape[0]
    step = max(1, _CHUNK_CELLS // n)
    out = np.empty(draws)
    diff = 100.0 * (tuned.mean(axis=0) - base)
    for start in range(0, draws, step):
        stop = min(draws, start + step)
        idx = rng.integers(0, n, size=(stop - start, n))
        if seed_weights is None:
            out[start:stop] = diff[idx].mean(axis=1)
        else:
            per_item = 100.0 * (seed_weights[start:stop] @ tuned - base)  # (draws in chunk, n)
            out[start:stop] = np.take_along_axis(per_item, idx, axis=1).mean(axis=1)
    return out


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def paired_bootstrap(
    pairs: dict[str, Paired],
    target: str | None,
    retention: Sequence[str],
    *,
    draws: int = DRAWS,
    level: float = LEVEL,
    seed: int = SEED,
) -> Intervals:
    """Intervals for E (the ``target`` benchmark), F (mean over ``retention``) and O = E + F within each draw.

    Every benchmark in ``pairs`` also gets its own interval in ``per_benchmark`` (drawn after E and F, so adding an
    out-of-domain benchmark does not move the E, F and O intervals). A missing target or retention key leaves that
    interval ``None``.

    >>> pairs = {"t": Paired(np.array([[1, 0]]), np.array([0, 0])), "r": Paired(np.array([[0]]), np.array([1]))}
    >>> iv = paired_bootstrap(pairs, "t", ["r"])
    >>> iv.E, iv.F, iv.O, iv.levels
    ((0.0, 100.0), (-100.0, -100.0), (-100.0, 0.0), 'items')
    """
    rng = np.random.default_rng(seed)
    arrays = {key: p.arrays() for key, p in pairs.items()}
    seeds = {t.shape[0] for t, _ in arrays.values()}
    if len(seeds) > 1:
        raise ValueError(f"benchmarks hold different numbers of seeds ({sorted(seeds)}); a seed is one run on all")
    k = seeds.pop() if seeds else 1
    weights = None
    if k > 1:  # one seed resample per draw, shared by every benchmark
        chosen = rng.integers(0, k, size=(draws, k))
        weights = np.stack([np.bincount(row, minlength=k) for row in chosen]).astype(float) / k
    out = Intervals(levels="seeds+items" if k > 1 else "items")
    draws_of: dict[str, np.ndarray] = {}
    order = ([target] if target in pairs else []) + [k for k in retention if k in pairs]
    order += [k for k in pairs if k not in order]
    for key in order:
        draws_of[key] = _mean_draws(*arrays[key], rng, draws, weights)
        out.per_benchmark[key] = _interval(draws_of[key], level)
    e = draws_of.get(target) if target is not None else None
    if e is not None:
        out.E = out.per_benchmark[target]
    if retention and all(k in draws_of for k in retention):
        f = np.mean([draws_of[k] for k in retention], axis=0)
        out.F = _interval(f, level)
        if e is not None:
            out.O = _interval(e + f, level)
    return out
