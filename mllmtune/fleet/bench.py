"""`mllmtune bench`: run a suite (recipes × models × seeds) and skip every cell the table already holds.

A cell is (recipe hash after overrides, seed, model id), the store's ``record_key``, so an interrupted suite resumes
where it stopped. Every recipe of the suite is validated before anything runs, and all problems are listed at once.
A failing run is recorded as ``failed`` and the suite goes on; Ctrl-C stops it.
"""

from __future__ import annotations

import fnmatch
import json
import time
import traceback
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.table import Table

from mllmtune.config.recipe import Recipe, load_recipe
from mllmtune.errors import UserError
from mllmtune.runs import store


class SuiteRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: str
    set: list[str] = Field(default_factory=list, description="overrides for this run, like `train --set`")


class Suite(BaseModel):
    """A suite file: which recipes, on which models, with which seeds."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    models: list[str] | None = Field(None, description="overrides each recipe's model.id; default: the recipe's own")
    set: list[str] = Field(default_factory=list, description="overrides applied to every run")
    runs: list[SuiteRun | str] = Field(min_length=1)


@dataclass
class Cell:
    """One planned run: a validated recipe and the key that says whether it is done."""

    path: str
    recipe: Recipe
    key: tuple[Hashable, ...]
    action: str = "run"  # run | skip | duplicate
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.recipe.name} · seed {self.recipe.seed} · {self.recipe.model.id}"


@dataclass
class Outcome:
    cell: Cell
    status: str  # ran | skipped | failed
    seconds: float = 0.0
    detail: str = ""


@dataclass
class BenchResult:
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


def _resolve(path: str, suite_file: Path) -> Path:
    """Recipe paths are relative to the working folder (the repo root), else to the suite file or its parent."""
    for candidate in (Path(path), suite_file.parent / path, suite_file.parent.parent / path):
        if candidate.is_file():
            return candidate
    return Path(path)


def _matches(patterns: list[str] | None, *texts: str) -> bool:
    """`--only` (repeatable): each pattern is a glob if it has wildcards, else a substring, matched against recipe
    path and name; a run matches when any pattern does."""
    if not patterns:
        return True

    def hit(pattern: str, text: str) -> bool:
        return fnmatch.fnmatch(text, pattern) if any(ch in pattern for ch in "*?[") else pattern in text

    return any(hit(p, t) for p in patterns for t in texts)


def load_suite(
    path: str | Path,
    only: list[str] | None = None,
    extra_set: list[str] | None = None,
    seeds: list[int] | None = None,
) -> tuple[Suite, list[Cell]]:
    """Validate a suite and every recipe in it; raise one :class:`UserError` listing every problem found.

    `seeds` replaces the suite's own seeds (e.g. one seed of a three-seed suite)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"suite file not found: {path}")
    from mllmtune.config.io import read_yaml

    data = read_yaml(path) or {}
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors()]
        raise UserError(f"{path}: not a valid suite: " + "; ".join(problems)) from None
    cells: list[Cell] = []
    problems: list[str] = []
    for run in suite.runs:
        run = SuiteRun(recipe=run) if isinstance(run, str) else run
        recipe_file = _resolve(run.recipe, path)
        for model in suite.models or [None]:
            for seed in seeds or suite.seeds:
                overrides = [*suite.set, *run.set, *(extra_set or []), f"seed={seed}"]
                overrides += [f"model.id={json.dumps(model)}"] if model is not None else []
                try:
                    recipe = load_recipe(recipe_file, overrides)
                except UserError as exc:
                    if _matches(only, run.recipe) and str(exc) not in problems:
                        problems.append(str(exc))
                    continue
                if _matches(only, run.recipe, recipe.name):
                    key = (recipe.hash(), recipe.seed, recipe.model.id)
                    cells.append(Cell(str(recipe_file), recipe, key))
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise UserError(f"{path}: {len(problems)} problem(s), nothing was run:\n{listing}")
    if not cells:
        shown = ", ".join(repr(p) for p in only or [])
        raise UserError(f"{path}: no run matches --only {shown}" if only else f"{path}: the suite has no runs")
    return suite, cells


def plan(cells: list[Cell], records: list[dict]) -> list[Cell]:
    """Mark cells whose key already has a successful record, and repeats of a cell earlier in the suite."""
    done = store.latest_successful(records)
    seen: set = set()
    for cell in cells:
        if cell.key in done:
            cell.action, cell.note = "skip", f"done: {done[cell.key].get('run_id')}"
        elif cell.key in seen:
            cell.action, cell.note = "duplicate", "same recipe, seed and model as an earlier run of this suite"
        seen.add(cell.key)
    return cells


def _failed_record(results: Path, cell: Cell, exc: BaseException, seconds: float) -> store.RunRecord:
    """A `failed` record for errors `run.train` raised before it could record one itself (e.g. model loading)."""
    from mllmtune.strategies import REGISTRY

    r = cell.recipe
    strategy = REGISTRY.get(r.strategy.name)
    return store.Results(results).record(
        run_id=store.new_run_id(r.name),
        status="failed",
        error=_error_text(exc),
        recipe=r.resolved(),
        recipe_hash=r.hash(),
        name=r.name,
        strategy=r.strategy.name,
        family=strategy.family if strategy else "unknown",
        stage=r.stage.name,
        seed=r.seed,
        model={"id": r.model.id, "revision": r.model.revision},
        trainable_params=0,
        total_params=0,
        wall_s=round(seconds, 2),
        train={"traceback": "".join(traceback.format_exception(exc))[-4000:]},
    )


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"


def _recorded_failure(results: Path, offset: int, key: tuple) -> bool:
    """Whether records appended after byte ``offset`` hold a `failed` record for ``key`` (run.train wrote one)."""
    path = store.Results(results).table
    if not path.exists():
        return False
    with path.open("rb") as handle:
        handle.seek(offset)
        for raw in handle:
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("status") == "failed" and store.record_key(rec) == key:
                return True
    return False


def run_cell(cell: Cell, results: Path, console: Console) -> Outcome:
    """Train one cell in-process; any failure becomes a `failed` record and an outcome, never an exception."""
    from mllmtune.runs import train as run

    path = store.Results(results).table
    offset = path.stat().st_size if path.exists() else 0
    t0 = time.time()
    try:
        record = run.train(cell.recipe, results, console)
    except Exception as exc:
        seconds = time.time() - t0
        if not _recorded_failure(results, offset, cell.key):
            store.append_record(results, _failed_record(results, cell, exc, seconds))
        console.print(f"[bold red]failed[/] {cell.label}: {_error_text(exc)}", highlight=False)
        return Outcome(cell, "failed", seconds, _error_text(exc))
    return Outcome(cell, "ran", time.time() - t0, record.run_id)


def _plan_table(cells: list[Cell], title: str) -> Table:
    table = Table(title=title)
    for col in ("#", "recipe", "model", "seed", "hash", "action", "note"):
        table.add_column(col, no_wrap=col != "note")
    for i, c in enumerate(cells, start=1):
        style = {"run": "bold", "skip": "dim", "duplicate": "dim"}[c.action]
        row = (str(i), c.recipe.name, c.recipe.model.id, str(c.recipe.seed), str(c.key[0])[:8], c.action, c.note)
        table.add_row(*row, style=style)
    return table


def _summary_table(result: BenchResult) -> Table:
    table = Table(title="suite summary")
    for col in ("recipe", "model", "seed", "status", "seconds", "run / error"):
        table.add_column(col, justify="right" if col == "seconds" else "left", overflow="fold")
    colors = {"ran": "green", "skipped": "dim", "failed": "red"}
    for o in result.outcomes:
        if o.status == "skipped":
            continue  # already listed in the plan
        r = o.cell.recipe
        status = f"[{colors[o.status]}]{o.status}[/]"
        table.add_row(r.name, r.model.id, str(r.seed), status, f"{o.seconds:.0f}", o.detail)
    return table


def _eta(done: list[float], remaining: int) -> str:
    if not done:
        return ""
    secs = int(sum(done) / len(done) * remaining)
    return f", eta ~{secs // 60}m{secs % 60:02d}s"


def run_suite(
    suite_path: str | Path,
    results: str | Path,
    console: Console,
    *,
    dry_run: bool = False,
    only: list[str] | None = None,
    extra_set: list[str] | None = None,
    seeds: list[int] | None = None,
) -> BenchResult:
    """Validate, plan, then train each remaining cell in order; returns what happened to every cell."""
    results = Path(results)
    suite, cells = load_suite(suite_path, only, extra_set, seeds)
    records, warnings = store.read_records(results)
    for w in warnings:
        console.print(f"warning: {w}", markup=False, highlight=False)
    cells = plan(cells, records)
    todo = [c for c in cells if c.action == "run"]
    console.print(_plan_table(cells, f"suite {suite.name}: {len(todo)} to run, {len(cells) - len(todo)} skipped"))
    result = BenchResult([Outcome(c, "skipped", detail=c.note) for c in cells if c.action != "run"])
    if dry_run:
        console.print("dry run: nothing was run")
        return result
    if todo:
        store.check_writable(results)
        from mllmtune.runtime import setup

        setup()
    t_start, durations = time.time(), []
    try:
        for i, cell in enumerate(todo, start=1):
            elapsed = int(time.time() - t_start)
            console.rule(
                f"[bold]run {i}/{len(todo)}[/]: {cell.label} "
                f"(elapsed {elapsed // 60}m{elapsed % 60:02d}s{_eta(durations, len(todo) - i + 1)})"
            )
            outcome = run_cell(cell, results, console)
            durations.append(outcome.seconds)
            result.outcomes.append(outcome)
    except KeyboardInterrupt:
        result.interrupted = True
        raise
    finally:
        if todo:
            console.print(_summary_table(result))
        console.print(
            f"ran {result.count('ran')} · skipped {result.count('skipped')} · failed {result.count('failed')}"
            + (" · interrupted: run the same command again to resume" if result.interrupted else "")
        )
    return result
