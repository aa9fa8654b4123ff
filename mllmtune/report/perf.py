"""perf.csv and its two readings: the terminal table of `mllmtune perf` and the section `mllmtune report` adds.

One row per figure: `section, figure, unit, median, min, max, ci_low, ci_high, ci_level, repeats, target, met, note,
values`. `median` is over the repeats, `min`/`max` their spread, `ci_low`-`ci_high` a distribution-free confidence
interval of the median at `ci_level` (see `median_interval`), `values` the repeats themselves. `target` is the bound
the suite promises where the figure has one, and `met` says what the interval says of it: `yes` (the whole interval
is within the bound), `no` (all of it beyond) or `unclear` (it straddles the bound: more repeats, or a quieter
machine, are needed to tell).
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Upper bounds the suite promises (see README "Performance"); a memory ratio holds its bound under every heap
# setting of `memory.HEAPS`.
TARGETS: dict[str, float] = {
    "full suite/plain": 1.05,
    "lora suite/plain": 1.05,
    "freeze suite/plain": 1.05,
    "full suite-plain batches+callbacks, share of a step": 0.05,
    "lora suite-plain batches+callbacks, share of a step": 0.05,
    "freeze suite-plain batches+callbacks, share of a step": 0.05,
    "emo-r3/grpo": 1.5,
    "lora/full": 0.5,
    "qlora/lora": 0.6,
    "--help minus python": 0.5,
}
COLUMNS = [
    "section", "figure", "unit", "median", "min", "max", "ci_low", "ci_high", "ci_level", "repeats", "target", "met",
    "note", "values",
]  # fmt: skip
FILE = "perf.csv"
LEVEL = 0.95


def median_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(low, high, coverage): the narrowest pair of order statistics x(k), x(n+1-k) that holds the median with
    probability >= `level` whatever the distribution (the count of values below the median is Binomial(n, 1/2)).

    Below 6 values no pair reaches 95%; the interval is then min-max and `coverage` says what it holds (75% with 3
    values, 93.75% with 5). Written out because `scipy.stats.quantile_test` returns NaN there and not the coverage it
    reaches, and the harness's default is 3 repeats.

    >>> median_interval([5, 1, 4, 2, 3, 9, 8, 7, 6])
    (2, 8, 0.9609375)
    >>> median_interval([3, 1, 2])
    (1, 3, 0.75)
    """
    xs = sorted(values)
    n = len(xs)

    def coverage(k: int) -> float:  # P(x(k) <= median <= x(n+1-k))
        return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2**n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= level:
        k += 1
    return xs[k - 1], xs[n - k], coverage(k)


def verdict(low: float, high: float, target: float) -> str:
    """What a median's interval says of an upper bound."""
    return "yes" if high <= target else "no" if low > target else "unclear"


@dataclass
class Row:
    section: str
    figure: str
    unit: str
    values: list[float]
    target: float | None = None
    note: str = ""

    def cells(self) -> dict:
        med = statistics.median(self.values)
        low, high, level = median_interval(self.values)
        return {
            "section": self.section,
            "figure": self.figure,
            "unit": self.unit,
            "median": f"{med:.6g}",
            "min": f"{min(self.values):.6g}",
            "max": f"{max(self.values):.6g}",
            "ci_low": f"{low:.6g}",
            "ci_high": f"{high:.6g}",
            "ci_level": f"{level:.4g}",
            "repeats": len(self.values),
            "target": "" if self.target is None else f"<= {self.target:g}",
            "met": "" if self.target is None else verdict(low, high, self.target),
            "note": self.note,
            "values": " ".join(f"{v:.6g}" for v in self.values),
        }


def write_csv(rows: list[Row], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.cells())
    return path


def read_csv(results: Path) -> list[dict] | None:
    path = Path(results) / FILE
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _num(text: str) -> str:
    value = float(text)
    if math.isnan(value):
        return "–"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"


def _interval(row: dict) -> str:
    """'low–high (level)'; min–max for a perf.csv written before the intervals were."""
    if not row.get("ci_level"):
        return f"{_num(row['min'])}–{_num(row['max'])}"
    return f"{_num(row['ci_low'])}–{_num(row['ci_high'])} ({float(row['ci_level']):.0%})"


def display(rows: list[dict], spread: bool = True) -> list[list[str]]:
    """Cells for a table: figure, median, [min–max,] the median's interval, unit, target and what the interval says
    of it. The terminal leaves min–max out (below 6 repeats it is the interval)."""
    return [
        [r["section"], r["figure"], _num(r["median"])]
        + ([f"{_num(r['min'])}–{_num(r['max'])}"] if spread else [])
        + [_interval(r), r["unit"], r["target"], r["met"]]
        for r in rows
    ]


HEADER = ["section", "figure", "median", "min–max", "median's CI", "unit", "target", "met"]
TERMINAL_HEADER = [h for h in HEADER if h != "min–max"]
TITLE = "performance (median over repeats; its confidence interval and level)"
STYLES = {"no": "red", "unclear": "yellow"}


def _terminal_table(title: str, rows: list[dict]):
    from rich.table import Table

    table = Table(title=title)
    for col in TERMINAL_HEADER:
        table.add_column(col, justify="left" if col in ("section", "figure", "unit", "target") else "right")
    for cells in display(rows, spread=False):
        table.add_row(*cells, style=STYLES.get(cells[-1]))
    return table


def print_table(rows: list[Row], console) -> None:
    console.print(_terminal_table(TITLE, [r.cells() for r in rows]))
    for note in sorted({r.note for r in rows if r.note}):
        console.print(f"  {note}", markup=False, highlight=False)


def report_table(results: Path, console) -> None:
    """The performance section of `mllmtune report` in the terminal, when perf.csv exists."""
    rows = read_csv(results)
    if rows:
        console.print(_terminal_table(f"performance ({Path(results) / FILE})", rows))


def report_markdown(results: Path) -> str:
    """The performance section of report.md, or '' when `mllmtune perf` has not run."""
    rows = read_csv(results)
    if not rows:
        return ""
    lines = [
        "## Performance\n",
        f"From `{Path(results) / FILE}` (`mllmtune perf`): medians over repeats, min–max, and a distribution-free "
        "confidence interval of each median with its level; `met` is `yes` when the whole interval is within the "
        "target, `no` when all of it is beyond, `unclear` when it straddles the target.\n",
    ]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in display(rows)]
    notes = sorted({r["note"] for r in rows if r["note"]})
    return "\n".join(lines) + "\n\n" + "".join(f"- {n}\n" for n in notes)
