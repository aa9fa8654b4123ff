"""The `mllmtune` command line. Heavy imports (torch, transformers) happen inside commands, so `--help` is instant."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mllmtune.errors import RunFailed, UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Tune multimodal LLMs and measure specialization gain against forgetting.",
)
console = Console(soft_wrap=True)  # long lines (run ids, commands) stay copyable
err_console = Console(stderr=True)


def _user_errors(fn):
    """Report a UserError as one line on stderr with exit code 2 (no traceback), for every command."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def command(typer_app: typer.Typer = app, *args, **kwargs):
    return lambda fn: typer_app.command(*args, **kwargs)(_user_errors(fn))


def _setup() -> None:
    from mllmtune.runtime import setup

    setup()


ResultsOpt = Annotated[Path, typer.Option("--results", help="folder of the shared run table (runs.jsonl)")]


@command()
def train(
    recipe: Annotated[Path | None, typer.Option("--recipe", "-r", help="recipe YAML file")] = None,
    set_: Annotated[
        list[str], typer.Option("--set", help="override a key, e.g. --set stage.learning_rate=1e-4")
    ] = None,
    results: ResultsOpt = Path("results"),
    resume: Annotated[str | None, typer.Option("--resume", help="continue a cancelled run from its checkpoint")] = (
        None
    ),
) -> None:
    """Tune a model as a recipe says, score it before and after, and append the run to the table."""
    from mllmtune.config.recipe import load_recipe
    from mllmtune.runs.train import train as run_train

    if (recipe is None) == (resume is None):
        raise UserError("train: give exactly one of --recipe RECIPE or --resume RUN_ID")
    if resume:
        from mllmtune.runs.train import resumable

        spec, record = resumable(results, resume)
    else:
        spec, record = load_recipe(recipe, set_ or []), None
    _setup()
    finished = False
    try:
        run_train(spec, results, console, resume=record)
        finished = True
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except RunFailed as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        from mllmtune.runtime import leave_process_group

        leave_process_group(wait=finished)


@command(app, "eval")
def eval_(
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="a local model folder, a hub id or a plug-in's id ('world', the default)"),
    ] = None,
    benchmarks: Annotated[list[str], typer.Option("--benchmarks", "-b", help="benchmark names (default: all)")] = None,
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--recipe",
            "-r",
            help="take the model, benchmarks (its eval.datasets too), template and limit from a recipe; "
            "options given here win",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="score N items of each: a seeded sample stratified by label, task or answer")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="prompts per generation batch (default 64)")] = None,
    template: Annotated[
        str | None, typer.Option(help="answer format asked of emotion benchmarks: plain, emo-r3 or think")
    ] = None,
    results: ResultsOpt = Path("results"),
) -> None:
    """Score a saved model as it is (a zero-shot row in the table)."""
    from mllmtune.evaluation.benchmarks import BENCHMARKS
    from mllmtune.runs import store

    spec = None
    if recipe is not None:
        from mllmtune.config.recipe import load_recipe

        spec = load_recipe(recipe)
        from mllmtune.evaluation.declared import register_all

        register_all(spec.eval)
        limit = limit if limit is not None else spec.eval.limit
        batch_size = batch_size or spec.eval.batch_size
        template = template or spec.eval.template
    names = list(benchmarks or []) or (
        spec.eval.target + spec.eval.retention + spec.eval.also
        if spec
        else list(BENCHMARKS)  # before a recipe declares any: the plug-ins' benchmarks
    )
    from mllmtune.evaluation import lmms_tasks

    if any(lmms_tasks.is_lmms(n) for n in names):
        lmms = spec.eval.lmms if spec else lmms_tasks.LmmsSpec()
        lmms_tasks.register(names, lmms, spec.eval.retention if spec else names)
    unknown = [b for b in names if b not in BENCHMARKS]
    if unknown:
        hint = "" if spec else " (a recipe's eval.datasets are known with --recipe)"
        raise UserError(f"--benchmarks: unknown benchmark {unknown[0]!r}; known: {', '.join(BENCHMARKS)}{hint}")
    template = template or "plain"
    if template not in ("plain", "emo-r3", "think"):
        raise UserError(f"--template: unknown template {template!r}; known: plain, emo-r3, think")
    store.check_writable(results)
    _setup()
    from rich.table import Table

    from mllmtune.models.bundle import load_bundle, load_model
    from mllmtune.runs.train import make_progress
    from mllmtune.runs.zero_shot import evaluate_model

    if model is None and spec is None:
        from mllmtune.config.defaults import apply

        model = (apply({}).get("model") or {}).get("id")
        if model is None:
            raise UserError("eval: give --model (a model folder or hub id) or --recipe")
    bundle = load_model(spec.model) if model is None else load_bundle(model)
    model = model or bundle.model_id
    with make_progress(console) as progress:
        record = evaluate_model(bundle, names, limit, batch_size or 64, results, progress, template=template)
    table = Table(title=f"{model} (zero-shot)")
    for col in ("benchmark", "accuracy", "details"):
        table.add_column(col)
    for key, metrics in record.scores.items():
        details = ", ".join(f"{k} {v:.1f}" for k, v in metrics.items() if k not in ("accuracy", "n"))
        table.add_row(key, f"{metrics['accuracy']:.1f}", details)
    console.print(table)
    console.print(f"run {record.run_id}, {record.wall_s:.0f}s")


@command()
def validate(recipes: Annotated[list[Path], typer.Argument(help="recipe YAML files")]) -> None:
    """Check recipes without running them."""
    from mllmtune.config.recipe import load_recipe
    from mllmtune.evaluation import lmms_tasks

    for path in recipes:
        r = load_recipe(path)
        lmms_tasks.check_names(r.eval.target + r.eval.retention + r.eval.also, r.eval.lmms)
        console.print(f"ok {path}: {r.name} ({r.strategy.name}, {r.stage.name}), hash {r.hash()}")


@command()
def bench(
    suite: Annotated[Path, typer.Argument(help="suite YAML, e.g. benchmarks/quick.yaml")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would run and what is skipped")] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(help="only recipes whose path or name matches (glob or text); repeat for several"),
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a key in every run")] = None,
    seeds: Annotated[str | None, typer.Option(help="comma-separated seeds replacing the suite's, e.g. 0")] = None,
    results: ResultsOpt = Path("results"),
) -> None:
    """Run a suite of recipes × models × seeds, skipping runs the table already holds (so it resumes).

    A failing run is recorded as failed and the suite goes on; the exit code is 1 if any run failed.
    """
    from mllmtune.fleet.bench import run_suite

    try:
        seed_list = [int(x) for x in seeds.split(",")] if seeds else None
    except ValueError:
        raise UserError(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
    outcome = run_suite(suite, results, console, dry_run=dry_run, only=only, extra_set=set_ or [], seeds=seed_list)
    if outcome.count("failed"):
        raise typer.Exit(1)


@command()
def report(
    results: ResultsOpt = Path("results"),
    out: Annotated[Path | None, typer.Option(help="output folder (default: RESULTS/report)")] = None,
) -> None:
    """Leaderboards (CSV, markdown), plots and a terminal table from the run table."""
    from mllmtune.report.write import run_report

    run_report(results, out, console, err_console)


@command(app, "ls")
def ls(
    what: Annotated[str, typer.Argument(help="strategies | recipes (and suites) | benchmarks | stages | rewards")] = (
        "strategies"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="with strategies: parameters per strategy and group, and memory per dtype, on this model (a folder, "
            "a config.json or a hub id; built from its config on the meta device, no weights read)",
        ),
    ] = None,
) -> None:
    """List what exists."""
    from rich.table import Table

    if model is not None and what != "strategies":
        raise UserError("ls: --model applies only to `ls strategies`")
    title = what
    if what == "strategies":
        from mllmtune.strategies.listing import strategy_rows

        if model is not None:
            _setup()
        rows = strategy_rows(model)
        if model is not None and not as_json:
            from mllmtune.strategies.listing import caption, table_rows

            title, rows = f"strategies on {model}: {caption(rows)}", table_rows(rows)
    elif what == "benchmarks":
        from mllmtune.evaluation.benchmarks import BENCHMARKS

        rows = [
            {"name": b.name, "version": b.version, "role": b.role, "description": b.description}
            for b in BENCHMARKS.values()
        ]
    elif what == "recipes":  # recipes and suites, by the names `mllmtune cp` takes
        from mllmtune.config.shipped import shipped

        rows = []
        for key, path in shipped().items():
            first = path.read_text(encoding="utf-8").splitlines()[:1]
            command = first[0].lstrip("# ").strip() if first and first[0].startswith("# mllmtune") else ""
            rows.append({"name": key.split("/", 1)[1], "kind": key.split("/", 1)[0][:-1], "command": command})
    elif what == "stages":
        from mllmtune.stages.registry import STAGES

        rows = [{"name": s.name, "description": s.description} for s in STAGES.values()]
    elif what == "rewards":
        from mllmtune.rewards import PRESETS, registry

        rows = [{"name": n, "description": (r.fn.__doc__ or "").strip().split("\n")[0]} for n, r in registry().items()]
        rows += [{"name": f"preset {n}", "description": str(w)} for n, w in PRESETS.items()]
    else:
        raise UserError(f"ls: unknown listing {what!r}; choose strategies, recipes, benchmarks, stages or rewards")
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=title)
    for col in rows[0] if rows else []:
        table.add_column(col)
    for row in rows:
        table.add_row(*[str(row.get(col, "")) for col in rows[0]])
    console.print(table)


@command(app, "cp")
def cp(
    name: Annotated[str, typer.Argument(help="a shipped recipe or suite: qwen2.5-vl-3b/lora, quick, or a path")],
    dest: Annotated[Path, typer.Argument(help="the copy: a file, or a folder that keeps the file's name")],
    force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False,
) -> None:
    """Copy a shipped recipe or suite to edit and run (`mllmtune ls recipes` lists them)."""
    from mllmtune.config.shipped import copy

    target = copy(name, dest, force)
    console.print(f"copied to {target}; edit it, then: mllmtune validate {target}")


@command(app, "export")
def export(
    run_id: Annotated[str, typer.Argument(help="run id from the table (results/runs.jsonl)")],
    out: Annotated[Path | None, typer.Option(help="output folder (default: RESULTS/runs/RUN_ID/export)")] = None,
    force: Annotated[bool, typer.Option(help="overwrite a non-empty output folder")] = False,
    results: ResultsOpt = Path("results"),
) -> None:
    """Write a run's tuned model as a standard Hugging Face model (updates merged; additive modules as adapters)."""
    from mllmtune.runs.export import export_run

    _setup()
    path = export_run(results, run_id, out, force)
    console.print(f"exported {run_id} to {path}")


# The composition root: installed plug-ins (the embedded world is one) add their commands here.
from mllmtune import plugins  # noqa: E402

for _attach in plugins.commands():
    _attach(app, command, console)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
