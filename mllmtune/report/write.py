"""`mllmtune report`: leaderboard CSVs, a GitHub-readable report.md, PNG plots and a terminal table.

The tables come from :mod:`mllmtune.report.leaderboard` (built once, so every output agrees); this module only
writes them.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from mllmtune.errors import UserError
from mllmtune.report.leaderboard import Report, build_report
from mllmtune.runs import store

MAX_TERMINAL_ROWS = 40


def fmt(value: float, signed: bool = True, digits: int = 1) -> str:
    """A number for a table cell; NaN (not measured) becomes a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def fmt_ci(row: pd.Series, metric: str) -> str:
    """``+3.2 [+1.0, +5.4]``, or the bare mean when no interval could be computed."""
    text = fmt(row[metric])
    lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return text
    return f"{text} [{lo:+.1f}, {hi:+.1f}]"


LEVELS = {"items": "items", "seeds+items": "seeds × items"}


def ci_header(levels) -> str:
    """'95% CI, items' (one seed: item resampling only) or '95% CI, seeds × items' (two-level), when all rows agree."""
    kinds = {LEVELS.get(v, "") for v in levels if isinstance(v, str) and v}
    return f"95% CI, {kinds.pop()}" if len(kinds) == 1 else "95% CI"


def display_table(report: Report) -> pd.DataFrame:
    """The leaderboard as text cells, shared by the markdown and the terminal."""
    lb = report.leaderboard
    ci = ci_header(lb["interval"])
    return pd.DataFrame(
        {
            "model": lb["model"],
            "recipe": lb["recipe"],
            "strategy": lb["strategy"],
            "family": lb["family"],
            "stage": lb["stage"],
            "seeds": lb["n_seeds"].astype(str),
            f"E [{ci}]": [fmt_ci(r, "E") for _, r in lb.iterrows()],
            f"F [{ci}]": [fmt_ci(r, "F") for _, r in lb.iterrows()],
            f"O [{ci}]": [fmt_ci(r, "O") for _, r in lb.iterrows()],
            "CI over": [LEVELS.get(v, "–") if isinstance(v, str) else "–" for v in lb["interval"]],
            "loss fgt": [fmt(v, digits=3) for v in lb["loss_forgetting"]],
            "A^I": [fmt(v, False) for v in lb["A_I"]],
            "A^O": [fmt(v, False) for v in lb["A_O"]],
            "A": [fmt(v, False) for v in lb["A"]],
            "trainable %": [fmt(100 * v, False, 2) for v in lb["trainable_share"]],
            "wall s": [fmt(v, False, 0) for v in lb["wall_s"]],
            "peak MB": [fmt(v, False, 0) for v in lb["peak_mem_mb"]],
        }
    )


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_none_\n"

    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _bench_display(report: Report) -> pd.DataFrame:
    b = report.by_benchmark
    delta = [fmt_ci(pd.Series({"d": r.delta, "d_lo": r.delta_lo, "d_hi": r.delta_hi}), "d") for r in b.itertuples()]
    return pd.DataFrame(
        {
            "model": b["model"],
            "recipe": b["recipe"],
            "benchmark": b["benchmark"],
            "role": b["role"],
            "accuracy": [fmt(v, False) for v in b["accuracy"]],
            "base": [fmt(v, False) for v in b["baseline"]],
            "Δ [95% CI]": delta,
        }
    )


def markdown(report: Report, plots: list[Path]) -> str:
    """report.md: the tables and the plots, with relative image links so it reads on GitHub."""
    n_ok = int(report.runs["counted"].sum()) if not report.runs.empty else 0
    parts = [
        "# mllmtune report\n",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} from `{report.results / store.RUNS_FILE}`: "
        f"{len(report.runs)} records, {n_ok} counted (latest success per recipe hash, seed and model), "
        f"{len(report.failed)} failed or cancelled.\n",
        "E: in-domain target accuracy minus the zero-shot base's (points). F: retention accuracy change "
        "(negative = forgetting). O = E + F. Intervals: paired bootstrap 95% against the zero-shot base, items "
        "paired by id and per-item scores resampled as they are; over several seeds the bootstrap resamples seeds, "
        "then items (`CI over`: seeds × items), over one seed items only. Benchmarks `beside F` are scored and "
        "shown per benchmark, in neither E nor F. Zero-shot rows are the base itself (E = F = O = 0).\n",
        "## Leaderboard (sorted by O)\n",
        _md_table(display_table(report)),
    ]
    titles = {"gain_vs_forgetting.png": "Gain against forgetting", "metrics.png": "E, F and O per recipe"}
    for path in plots:
        parts += [f"## {titles.get(path.name, path.stem)}\n", f"![{path.stem}]({path.name})\n"]
    parts += ["## Per benchmark\n", _md_table(_bench_display(report))]
    failed = report.failed.assign(resolved=report.failed["resolved"].map({True: "yes, later success", False: "no"}))
    parts += ["## Failed and cancelled runs (never averaged in)\n", _md_table(failed)]
    if report.warnings:
        parts += ["## Warnings\n", "".join(f"- {w}\n" for w in report.warnings)]
    from mllmtune.report.perf import report_markdown

    perf = report_markdown(report.results)
    if perf:
        parts.append(perf)
    return "\n".join(parts)


def write_report(report: Report, out: Path) -> list[Path]:
    """Write the CSVs, the plots and report.md into ``out``; returns the files written."""
    from mllmtune.report.plots import write_plots

    store.check_writable(out)
    written = []
    for name, df in (
        ("leaderboard.csv", report.leaderboard),
        ("leaderboard_by_benchmark.csv", report.by_benchmark),
        ("runs.csv", report.runs),
        ("failed.csv", report.failed),
    ):
        df.to_csv(out / name, index=False, float_format="%.10g")
        written.append(out / name)
    plots = write_plots(report.runs, report.leaderboard, out)
    (out / "report.md").write_text(markdown(report, plots), encoding="utf-8")
    return written + plots + [out / "report.md"]


def _terminal_table(report: Report, console: Console) -> Table:
    shown = display_table(report).drop(columns=["peak MB"])
    if shown["model"].nunique() <= 1:
        shown = shown.drop(columns=["model"])
    shown["family"] = shown["family"].replace({"reparameterization": "reparam."})
    for col in ("wall s", "trainable %", "A", "A^O", "stage", "family", "loss fgt", "strategy", "seeds", "A^I"):
        widths = [max([len(col), *shown[c].astype(str).str.len().head(MAX_TERMINAL_ROWS)]) + 3 for c in shown]
        if sum(widths) <= console.width:
            break
        shown = shown.drop(columns=[col])  # narrow terminal: keep the numbers that matter, the CSV has the rest
    table = Table(title="leaderboard (sorted by O; E, F, O in points against the zero-shot base)")
    for col in shown.columns:
        left = col in ("model", "recipe", "strategy", "family", "stage")
        width = int(shown[col].astype(str).str.len().max())
        # Names never collapse; on a narrow terminal the interval columns wrap onto a second line instead.
        table.add_column(col, justify="left" if left else "right", min_width=min(width, 24) if left else None)
    zero = report.leaderboard["stage"].eq("zero-shot").tolist()
    for i, row in enumerate(shown.head(MAX_TERMINAL_ROWS).itertuples(index=False)):
        table.add_row(*map(str, row), style="dim" if zero[i] else None)
    return table


def print_report(report: Report, console: Console) -> None:
    """The leaderboard as a rich table, best O first, then failures apart."""
    if report.leaderboard.empty:
        console.print("no successful runs in the table yet")
    else:
        console.print(_terminal_table(report, console))
        if len(report.leaderboard) > MAX_TERMINAL_ROWS:
            console.print(f"… {len(report.leaderboard) - MAX_TERMINAL_ROWS} more rows in leaderboard.csv")
    if not report.failed.empty:
        console.print(f"[bold red]{len(report.failed)} failed or cancelled run(s)[/] (not averaged in):")
        for r in report.failed.tail(10).itertuples(index=False):
            later = " (later succeeded)" if r.resolved else ""
            console.print(f"  {r.status} {r.recipe} seed {r.seed} on {r.model}{later}: {r.error}", markup=False)
        if len(report.failed) > 10:
            console.print(f"  … the latest 10 shown; all {len(report.failed)} are in failed.csv")


def run_report(results: Path, out: Path | None, console: Console, err_console: Console | None = None) -> Report:
    """The `report` command: build, write and print; warnings go to stderr."""
    if not store.runs_file(results).exists():
        raise UserError(f"no run table at {store.runs_file(results)}; run `mllmtune train` or `mllmtune bench` first")
    report = build_report(results)
    for warning in report.warnings:
        (err_console or console).print(f"warning: {warning}", markup=False, highlight=False)
    files = write_report(report, out or store.Results(results).report)
    print_report(report, console)
    from mllmtune.report.perf import report_table

    report_table(results, console)
    console.print(f"wrote {len(files)} files to {files[0].parent}: {', '.join(p.name for p in files)}")
    return report
