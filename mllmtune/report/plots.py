"""The report's PNG plots: gain against forgetting per run (with its Pareto front) and E / F / O bars per recipe.

matplotlib runs on the Agg backend, so plots render without a display (CI, SSH, the device machines).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

FAMILY_COLORS = {"selective": "#1f77b4", "additive": "#ff7f0e", "reparameterization": "#2ca02c"}
OTHER_COLOR = "#7f7f7f"
STAGE_MARKERS = {"sft": "o", "grpo": "^"}
METRIC_COLORS = {"E": "#4c72b0", "F": "#dd8452", "O": "#55a868"}
MAX_BARS = 30
MAX_LABELS = 12


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats in both x and y (both maximized), sorted by x.

    >>> pareto_front(np.array([0.0, 1.0, 2.0, 1.0]), np.array([2.0, 1.0, 0.0, 0.5])).tolist()
    [0, 1, 2]
    """
    order = np.lexsort((-y, -x))  # x descending, ties broken by y descending
    front, best = [], -np.inf
    for i in order:
        if y[i] > best:
            front.append(i)
            best = y[i]
    return np.array(sorted(front, key=lambda i: x[i]), dtype=int)


def _label(row: pd.Series, many_models: bool, with_seed: bool = False) -> str:
    text = str(row["recipe"])
    if with_seed:
        text += f" s{row['seed']}"
    return f"{text} · {row['model']}" if many_models else text


def _label_front(fig, ax, front: pd.DataFrame, many_models: bool) -> None:
    """Name the front's runs, dropping any label that would overlap one already placed (greedy, left to right)."""
    renderer = fig.canvas.get_renderer()
    boxes = []
    for n, (_, row) in enumerate(front.iterrows()):
        if len(boxes) >= MAX_LABELS:
            break
        text = ax.annotate(
            _label(row, many_models, with_seed=True), (row["F"], row["E"]), xytext=(7, 7 if n % 2 else -13),
            textcoords="offset points", fontsize=8,
        )  # fmt: skip
        box = text.get_window_extent(renderer).expanded(1.05, 1.2)
        if any(box.overlaps(b) for b in boxes):
            text.remove()
        else:
            boxes.append(box)


def gain_vs_forgetting(runs: pd.DataFrame, path: Path) -> Path | None:
    """Scatter of E against F for every counted run, coloured by family, with the Pareto front over runs."""
    import matplotlib.pyplot as plt

    pts = runs[runs["counted"] & (runs["stage"] != "zero-shot")].dropna(subset=["E", "F"])
    if pts.empty:
        return None
    many_models = pts["model"].nunique() > 1
    fig, ax = plt.subplots(figsize=(8.5, 6.0), dpi=120)
    ax.axhline(0, color="#bbbbbb", lw=0.8, zorder=0)
    ax.axvline(0, color="#bbbbbb", lw=0.8, zorder=0)
    alpha = 0.85 if len(pts) <= 200 else 0.35
    for (family, stage), sub in pts.groupby(["family", "stage"], sort=True):
        ax.scatter(
            sub["F"], sub["E"], s=36, alpha=alpha, color=FAMILY_COLORS.get(family, OTHER_COLOR),
            marker=STAGE_MARKERS.get(stage, "s"), edgecolor="white", linewidth=0.5, label=f"{family} ({stage})",
        )  # fmt: skip
    front = pareto_front(pts["F"].to_numpy(float), pts["E"].to_numpy(float))
    fx, fy = pts["F"].to_numpy(float)[front], pts["E"].to_numpy(float)[front]
    ax.plot(fx, fy, color="black", lw=1.2, ls="--", drawstyle="steps-pre", label="Pareto front", zorder=3)
    ax.scatter(fx, fy, s=70, facecolor="none", edgecolor="black", linewidth=1.2, zorder=4)
    ax.set_xlabel("F: stabilization, retention accuracy change (points; < 0 = forgetting)")
    _label_front(fig, ax, pts.iloc[front], many_models)
    ax.set_ylabel("E: specialization gain on the in-domain target (points)")
    ax.set_title(f"Gain against forgetting: {len(pts)} run(s), Pareto front of {len(front)}")
    ax.legend(loc="best", fontsize=8, frameon=True)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def metric_bars(leaderboard: pd.DataFrame, path: Path) -> Path | None:
    """Horizontal E / F / O bars per leaderboard row (best O on top) with their 95% bootstrap intervals."""
    import matplotlib.pyplot as plt

    rows = leaderboard[leaderboard["stage"] != "zero-shot"].dropna(subset=["O"]).head(MAX_BARS)
    if rows.empty:
        return None
    many_models = leaderboard["model"].nunique() > 1
    dup = rows.duplicated(["recipe", "model"], keep=False)  # same name, different config: tell them apart by hash
    labels = [
        _label(r, many_models) + (f" [{r['recipe_hash'][:6]}]" if d else "") + f"  (n={r['n_seeds']})"
        for (_, r), d in zip(rows.iterrows(), dup, strict=True)
    ]
    y = np.arange(len(rows))[::-1]
    height = 0.26
    fig, ax = plt.subplots(figsize=(9.0, 1.2 + 0.42 * len(rows)), dpi=120)
    for k, metric in enumerate(("E", "F", "O")):
        vals = rows[metric].to_numpy(float)
        ys = y + (1 - k) * height
        ax.barh(ys, vals, height, color=METRIC_COLORS[metric], label=metric)
        lo, hi = rows[f"{metric}_lo"].to_numpy(float), rows[f"{metric}_hi"].to_numpy(float)
        ok = ~(np.isnan(lo) | np.isnan(hi))  # rows without prediction files get no whisker rather than a fake one
        if ok.any():
            err = np.vstack([vals[ok] - lo[ok], hi[ok] - vals[ok]])
            ax.errorbar(vals[ok], ys[ok], xerr=err, fmt="none", ecolor="#333333", elinewidth=0.9, capsize=2)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_yticks(y, labels, fontsize=8)
    for tick, family in zip(ax.get_yticklabels(), rows["family"], strict=True):
        tick.set_color(FAMILY_COLORS.get(family, OTHER_COLOR))
    ax.set_xlabel(
        "points against the zero-shot base (bars: mean over seeds; whiskers: paired-bootstrap 95% CI)\n"
        "label colour: family (blue selective, orange additive, green reparameterization)"
    )
    total = int((leaderboard["stage"] != "zero-shot").sum())
    shown = f" (top {len(rows)} of {total} by O)" if total > len(rows) else ""
    ax.set_title(f"E (gain), F (stabilization) and O = E + F per recipe{shown}")
    ax.legend(loc="lower right", fontsize=8, ncols=3)
    ax.grid(axis="x", alpha=0.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(runs: pd.DataFrame, leaderboard: pd.DataFrame, out: Path) -> list[Path]:
    """Write every plot that has data into ``out``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    made = [gain_vs_forgetting(runs, out / "gain_vs_forgetting.png"), metric_bars(leaderboard, out / "metrics.png")]
    return [p for p in made if p is not None]
