"""Paired bootstrap intervals for E, F and O against the zero-shot baseline.

Written with numpy instead of ``scipy.stats.bootstrap``: scipy handles a paired statistic over one set of samples,
but O = E + F joins two different sample sets (the in-domain target and the retention benchmarks, each resampled on
its own indices) within one draw, which its API cannot express.

Each benchmark's indices are resampled jointly for the tuned runs and the baseline (a paired bootstrap), and with
several seeds the seeds' per-sample correctness differences are averaged before the draw, so all seeds see the same
resampled items. The RNG seed is fixed, and each group gets a fresh generator, so a row's interval does not depend on
which other rows the report holds.
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
    """One benchmark's per-sample correctness: ``tuned`` is (seeds, n), ``base`` is (n,), in the same item order."""

    tuned: np.ndarray
    base: np.ndarray

    def diff(self) -> np.ndarray:
        """Per-item difference in points, averaged over seeds."""
        tuned = np.atleast_2d(np.asarray(self.tuned, dtype=float))
        base = np.asarray(self.base, dtype=float)
        if tuned.shape[1] != base.shape[0] or base.size == 0:
            raise ValueError(f"tuned {tuned.shape} and base {base.shape} do not pair item by item")
        return 100.0 * (tuned.mean(axis=0) - base)


@dataclass
class Intervals:
    """Percentile intervals ``(lo, hi)`` for E, F, O and each benchmark's own difference."""

    E: tuple[float, float] | None = None
    F: tuple[float, float] | None = None
    O: tuple[float, float] | None = None  # noqa: E741
    per_benchmark: dict[str, tuple[float, float]] = field(default_factory=dict)


def read_correct(path: Path) -> np.ndarray | None:
    """The `correct` flags of a per-sample predictions file, in item order; ``None`` if absent, empty or damaged."""
    try:
        with path.open(encoding="utf-8") as handle:
            flags = np.array([bool(json.loads(line)["correct"]) for line in handle if line.strip()])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return flags if flags.size else None


def _mean_draws(diff: np.ndarray, rng: np.random.Generator, draws: int) -> np.ndarray:
    """Bootstrap means of ``diff``: ``draws`` resamples of its items with replacement."""
    n = diff.shape[0]
    step = max(1, _CHUNK_CELLS // n)
    out = np.empty(draws)
    for start in range(0, draws, step):
        stop = min(draws, start + step)
        out[start:stop] = diff[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
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
    >>> iv.E, iv.F, iv.O
    ((0.0, 100.0), (-100.0, -100.0), (-100.0, 0.0))
    """
    rng = np.random.default_rng(seed)
    out = Intervals()
    draws_of: dict[str, np.ndarray] = {}
    order = ([target] if target in pairs else []) + [k for k in retention if k in pairs]
    order += [k for k in pairs if k not in order]
    for key in order:
        draws_of[key] = _mean_draws(pairs[key].diff(), rng, draws)
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
