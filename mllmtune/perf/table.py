"""perf.csv and its two readings: the terminal table of `mllmtune perf` and the section `mllmtune report` adds.

One row per figure: `section, figure, unit, median, min, max, repeats, target, met, note`. `median` is over the
repeats, `min`/`max` their spread; `target` is the issue's bound where the figure has one (`met`: yes / no).
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

# Upper bounds the suite promises (see README "Performance").
TARGETS: dict[str, float] = {
    "full suite/plain": 1.05,
    "lora suite/plain": 1.05,
    "freeze suite/plain": 1.05,
    "emo-r3/grpo": 1.5,
    "lora/full": 0.5,
    "qlora/lora": 0.6,
    "lora/full, freed released": 0.5,
    "qlora/lora, freed released": 0.6,
    "--help minus python": 0.5,
}
COLUMNS = ["section", "figure", "unit", "median", "min", "max", "repeats", "target", "met", "note"]
FILE = "perf.csv"


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
        met = "" if self.target is None else ("yes" if med <= self.target else "no")
        return {
            "section": self.section,
            "figure": self.figure,
            "unit": self.unit,
            "median": f"{med:.6g}",
            "min": f"{min(self.values):.6g}",
            "max": f"{max(self.values):.6g}",
            "repeats": len(self.values),
            "target": "" if self.target is None else f"<= {self.target:g}",
            "met": met,
            "note": self.note,
        }


def write_csv(rows: list[Row], path: Path, repeats: int) -> Path:
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


def display(rows: list[dict]) -> list[list[str]]:
    """Cells for a table: figure, median, spread, unit, target and whether it is met."""
    return [
        [
            r["section"],
            r["figure"],
            _num(r["median"]),
            f"{_num(r['min'])}–{_num(r['max'])}",
            r["unit"],
            r["target"],
            r["met"],
        ]
        for r in rows
    ]


HEADER = ["section", "figure", "median", "min–max", "unit", "target", "met"]


def print_table(rows: list[Row], console) -> None:
    from rich.table import Table

    table = Table(title="performance (median over repeats; min–max spread)")
    for col in HEADER:
        table.add_column(col, justify="left" if col in ("section", "figure", "unit", "target") else "right")
    for cells in display([r.cells() for r in rows]):
        style = "red" if cells[-1] == "no" else None
        table.add_row(*cells, style=style)
    console.print(table)
    notes = sorted({r.note for r in rows if r.note})
    for note in notes:
        console.print(f"  {note}", markup=False, highlight=False)


def report_table(results: Path, console) -> None:
    """The performance section of `mllmtune report` in the terminal, when perf.csv exists."""
    rows = read_csv(results)
    if not rows:
        return
    from rich.table import Table

    table = Table(title=f"performance ({Path(results) / FILE})")
    for col in HEADER:
        table.add_column(col)
    for cells in display(rows):
        table.add_row(*cells, style="red" if cells[-1] == "no" else None)
    console.print(table)


def report_markdown(results: Path) -> str:
    """The performance section of report.md, or '' when `mllmtune perf` has not run."""
    rows = read_csv(results)
    if not rows:
        return ""
    lines = ["## Performance\n", f"From `{Path(results) / FILE}` (`mllmtune perf`): medians over repeats, min–max.\n"]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in display(rows)]
    notes = sorted({r["note"] for r in rows if r["note"]})
    return "\n".join(lines) + "\n\n" + "".join(f"- {n}\n" for n in notes)
