"""One run from recipe to record: load, score the base, apply the strategy, train, score, append."""

from __future__ import annotations

import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mllmtune.config.recipe import Recipe
from mllmtune.errors import RunFailed, UserError
from mllmtune.evaluation.benchmarks import BENCHMARKS
from mllmtune.evaluation.summary import summarize
from mllmtune.runs import store
from mllmtune.runs.zero_shot import baseline_scores, eval_keys, model_info, scored_model


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def train_examples(recipe: Recipe) -> list[dict]:
    """The training rows of the recipe's data source: a registered one (a plug-in's, e.g. the world's), or files and
    hub data sets (`skipped` counts rows with unreadable images)."""
    from mllmtune.data import registry

    source = registry.get(recipe.data.source)
    if source is not None:
        return source.load(recipe.data)
    from mllmtune.data.sources import load_examples

    return load_examples(recipe.data, "data")


def _append_record(
    results: Path, base: dict, t0: float, bundle, baseline, baseline_runs, status: str = "failed", **fields
) -> store.RunRecord:
    """Append a run's record once its baseline is known: `success`, or `failed` / `cancelled` (whose `error`
    defaults to the exception being handled). `fields`: scores, train, artifacts, error."""
    import sys

    from mllmtune.strategies.targets import count_parameters

    if status != "success" and "error" not in fields:
        exc = sys.exc_info()[1]
        fields["error"] = f"{type(exc).__name__}: {exc}"
    trainable, total = count_parameters(bundle.model)
    record = store.Results(results).record(
        **base,
        **fields,
        status=status,
        t0=t0,
        trainable_params=trainable,
        total_params=total,
        baseline=baseline,
        baseline_runs=baseline_runs,
    )
    store.append_record(results, record)
    return record


def resume_hint(recipe: Recipe, results: Path) -> str | None:
    """A note when this recipe and seed has a cancelled run with a checkpoint and no success since: starting again
    would begin at step 0, so say how to continue the cancelled one instead."""
    records, _ = store.read_records(results)
    mine = [r for r in records if r.get("recipe_hash") == recipe.hash() and r.get("seed") == recipe.seed]
    since = mine[max((i for i, r in enumerate(mine) if r.get("status") == "success"), default=-1) + 1 :]
    for r in reversed(since):
        checkpoint = (r.get("artifacts") or {}).get("checkpoint")
        if r.get("status") == "cancelled" and checkpoint and store.artifact(results, checkpoint).is_dir():
            return (
                f"note: run {r['run_id']} of this recipe and seed was cancelled and can be resumed: "
                f"mllmtune train --resume {r['run_id']} --results {results}"
            )
    return None


def check_disjoint(examples: list[dict], names: list[str]) -> None:
    """Refuse a run whose training rows share an image (same content or same file) with a declared test set."""
    from mllmtune.data.splits import overlap

    for name in names:
        bench = BENCHMARKS[name]
        spec = getattr(bench, "spec", None)
        if spec is None:
            continue
        shared = overlap(examples, bench.examples(None))
        if shared:
            raise UserError(
                f"{shared} training row(s) of data ({_where(examples)}) are test items of benchmark {name!r} "
                f"({spec.data.path}, split {spec.data.split!r}): train and test overlap; give them disjoint splits "
                f"(fix data.split or eval.datasets.{name}.data.split, in configs/datasets/{name}.yaml where the set "
                "is declared in a file; or use the same holdout on both)"
            )


def _where(examples) -> str:
    first = examples[0].get("source_row", "") if examples else ""
    return str(first).rsplit(" row ", 1)[0] or "the recipe's data"


def train(recipe: Recipe, results: Path, console: Console, resume: dict | None = None) -> store.RunRecord | None:
    """Run a recipe end to end. User errors before training append nothing; later failures append `failed`.

    Ctrl-C or SIGTERM during training appends `cancelled` with the checkpoint saved at that step; `resume` (a
    cancelled record) continues that run, under the same run id, from its checkpoint. Under a multi-process launch
    every process trains and only the main one scores, saves and records (the others return None).
    """
    from transformers import set_seed

    from mllmtune import runtime, strategies
    from mllmtune.evaluation import lmms_tasks
    from mllmtune.evaluation.runner import evaluate, prepare
    from mllmtune.models.bundle import load_model
    from mllmtune.stages import registry as stages
    from mllmtune.stages.loop import Cancelled, held_signals
    from mllmtune.strategies.saving import save_tuned
    from mllmtune.strategies.targets import count_parameters

    strategy = strategies.get(recipe.strategy.name)
    if strategy.preflight:  # environment checks (e.g. 4-bit kernels) before anything is written
        strategy.preflight(recipe.strategy)
    store.check_writable(results)
    hint = None if resume else resume_hint(recipe, results)
    if hint and runtime.is_main():
        console.print(hint, markup=False, highlight=False)
    t0 = time.time()
    set_seed(recipe.seed)
    # Data first: a bad source or a test set that overlaps the training rows stops before the model is loaded.
    from mllmtune.evaluation.declared import forget_loaded, register_all

    forget_loaded()
    register_all(recipe.eval)  # the data sets the recipe declares, scored by name
    examples = train_examples(recipe)
    names = recipe.eval.target + recipe.eval.retention + recipe.eval.also
    lmms_tasks.register(names, recipe.eval.lmms, recipe.eval.retention)  # lmms-eval tasks: checked, then named
    check_disjoint(examples, names)
    if recipe.stage.name == "grpo":  # a bad candidate list fails before anything is scored or recorded
        from mllmtune.stages.grpo import check_labels

        check_labels(examples, recipe.stage)
    bundle = load_model(recipe.model)
    if recipe.stage.name == "grpo":
        from mllmtune.stages.grpo import check_family

        check_family(bundle.family)
    if strategy.check:  # groups that match nothing fail before the baseline is scored and recorded
        strategy.check(bundle, recipe.strategy)
    run_id = runtime.agree(resume["run_id"] if resume else store.new_run_id(recipe.name))
    main = runtime.is_main()
    if not main:
        console = Console(quiet=True)
    folder = store.Results(results)
    folder.run(run_id)  # the id checked, and its folder inside the results folder, before anything trains
    base = dict(
        run_id=run_id,
        recipe=recipe.resolved(),
        recipe_hash=recipe.hash(),
        name=recipe.name,
        strategy=strategy.name,
        family=strategy.family,
        stage=recipe.stage.name,
        seed=recipe.seed,
        model=model_info(bundle),
    )
    with make_progress(console) as progress:
        template = recipe.eval.template
        # The items, once: the base is scored (or its stored score found) on them, and so is the tuned model.
        prepared = prepare(names, recipe.eval.limit, template, scored_model(bundle)) if main else []
        baseline, baseline_runs = (
            baseline_scores(
                bundle,
                names,
                recipe.eval.limit,
                recipe.eval.batch_size,
                results,
                progress,
                console,
                template,
                prepared,
            )
            if main
            else ({}, {})
        )
        trained, model_dir = False, None
        try:
            set_seed(recipe.seed)
            model = strategy.build(bundle, recipe.strategy, examples)
            bundle.model = model
            trainable, total = count_parameters(model)
            console.print(
                f"strategy {strategy.name} ({strategy.family}): {trainable:,} of {total:,} parameters "
                f"train ({100 * trainable / total:.2f}%)"
            )
            with held_signals():  # a signal while the stage sets up stops it at its first step
                summary = stages.get(recipe.stage.name).runner()(
                    model,
                    bundle.processor,
                    examples,
                    recipe.stage,
                    folder.checkpoints(run_id),
                    recipe.seed,
                    progress=progress,
                    label=f"{recipe.stage.name} {recipe.name}",
                    optimizer=strategy.optimizer(model, recipe.strategy, recipe.stage) if strategy.optimizer else None,
                    resume_from=resume["artifacts"]["checkpoint"] if resume else None,
                )
            if not main:
                return None
            trained = True
            # Saved before scoring: an evaluation that fails (e.g. an lmms-eval task) must not cost the training.
            model_dir = save_tuned(model, bundle, strategy, recipe.strategy, folder.model(run_id))
            scores, predictions = evaluate(
                model, bundle.processor, names, recipe.eval.limit, recipe.eval.batch_size, progress, template, prepared
            )
        except UserError:
            if not trained:
                raise
            # A user error after training (e.g. in an lmms-eval task): recorded with the saved model.
            _append_record(results, base, t0, bundle, baseline, baseline_runs, artifacts={"model": str(model_dir)})
            raise
        except (Exception, KeyboardInterrupt) as exc:
            if not main:
                raise
            cancelled = isinstance(exc, Cancelled | KeyboardInterrupt)
            checkpoint = getattr(exc, "checkpoint", None)
            _append_record(
                results,
                base,
                t0,
                bundle,
                baseline,
                baseline_runs,
                status="cancelled" if cancelled else "failed",
                error=f"{type(exc).__name__}: {exc}" if not cancelled else str(exc) or "interrupted",
                artifacts={"checkpoint": checkpoint} if checkpoint else {},
                train={} if cancelled else {"traceback": traceback.format_exc()[-4000:]},
            )
            if cancelled:
                hint = f"; resume with: mllmtune train --resume {run_id}" if checkpoint else ""
                console.print(f"run {run_id} cancelled{hint}")
            if isinstance(exc, FloatingPointError):  # diverged: the record holds the traceback, the user one line
                raise RunFailed(f"run {run_id} failed: {exc} (recorded in {store.runs_file(results)})") from None
            raise
    for key, rows in predictions.items():
        store.write_predictions(results, run_id, key, rows)
    record = _append_record(
        results,
        base,
        t0,
        bundle,
        baseline,
        baseline_runs,
        status="success",
        scores=scores,
        train={**summary, **({"skipped_images": examples.skipped} if hasattr(examples, "skipped") else {})},
        artifacts={"predictions": str(folder.predictions_dir(run_id)), "model": str(model_dir)},
    )
    print_summary(console, record, recipe)
    return record


def print_summary(console: Console, record: store.RunRecord, recipe: Recipe) -> None:
    template = recipe.eval.template
    target, retention = eval_keys(recipe.eval.target, template), eval_keys(recipe.eval.retention, template)
    table = Table(title=f"{record.name}: {record.strategy} ({record.family}), seed {record.seed}")
    for col in ("benchmark", "role", "base acc", "tuned acc", "Δ"):
        table.add_column(col, justify="left" if col in ("benchmark", "role") else "right")
    beside = eval_keys(recipe.eval.also, template)
    for key in target + retention + beside:
        b, t = (record.baseline or {}).get(key, {}).get("accuracy"), record.scores[key]["accuracy"]
        role = "in-domain" if key == target[0] else ("target" if key in target else "retention")
        role = "beside F" if key in beside else role
        table.add_row(
            key, role, f"{b:.1f}" if b is not None else "-", f"{t:.1f}", f"{t - b:+.1f}" if b is not None else "-"
        )
    console.print(table)
    s = summarize(record.scores, record.baseline, target, retention)
    console.print(
        f"E {s.get('E', float('nan')):+.1f}  F {s.get('F', float('nan')):+.1f}  O {s.get('O', float('nan')):+.1f}  "
        f"(A^I {s['A_I']:.1f}, A^O {s['A_O']:.1f}, A {s['A']:.1f}; loss forgetting "
        f"{s.get('loss_forgetting', float('nan')):+.3f})"
    )
    share = 100 * record.trainable_params / max(1, record.total_params)
    console.print(
        f"trainable {record.trainable_params:,} / {record.total_params:,} ({share:.2f}%), "
        f"wall {record.wall_s:.0f}s, peak memory {record.peak_mem_mb or 0:.0f} MB, run {record.run_id}"
    )


def resumable(results: Path, run_id: str) -> tuple[Recipe, dict]:
    """The recipe and latest record of a cancelled run that left a checkpoint."""
    from mllmtune.config.recipe import validate

    try:
        store.check_run_id(run_id)
    except UserError as exc:
        raise UserError(f"--resume: {exc}") from None
    records, _ = store.read_records(results)
    mine = [r for r in records if r.get("run_id") == run_id]
    if not mine:
        raise UserError(f"--resume: no run {run_id!r} in {store.runs_file(results)}")
    last = mine[-1]
    checkpoint = last.get("artifacts", {}).get("checkpoint")
    if last["status"] == "success":
        raise UserError(f"--resume: run {run_id} already succeeded")
    folder = store.artifact(results, checkpoint) if checkpoint else None
    if folder is None or not folder.is_dir():
        raise UserError(f"--resume: run {run_id} ({last['status']}) left no checkpoint to resume from")
    last = dict(last, artifacts=dict(last["artifacts"], checkpoint=str(folder)))
    return validate(last["recipe"], f"recipe of run {run_id}"), last
