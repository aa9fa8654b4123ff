"""No traceback reaches a user, and no broken run is recorded as a success."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mllmtune.cli import app
from mllmtune.config.recipe import load_recipe
from mllmtune.errors import UserError

runner = CliRunner()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=-1", "seed: "),
        ("seed=4294967296", "seed: "),
        ("stage.lr_scheduler=cosine_wobble", "stage.lr_scheduler: unknown scheduler 'cosine_wobble'; known: "),
        ("stage.learning_rate=.inf", "stage.learning_rate: "),
        ("stage.learning_rate=.nan", "stage.learning_rate: "),
        ("data.split=validation", "data.split: the world has no split 'validation'; known: test, train"),
        ("eval.target=[]", "eval.target: "),
        ("stage.max_steps=1000000000000", "stage.max_steps: "),
        ("stage.epochs=1e12", "stage.epochs: "),
    ],
)
def test_validation_catches_what_training_would_die_on(override, message):
    with pytest.raises(UserError, match="^recipes/world/sft-full.yaml: " + message.replace(".", r"\.")):
        load_recipe("recipes/world/sft-full.yaml", [override])


@pytest.mark.parametrize("logging_steps", [1, 10])
def test_weights_that_go_non_finite_fail_the_run_at_that_step(micro_world, tmp_path, logging_steps):
    """A learning rate of 1e30 sends the weights to inf within the 3 steps; the run must end failed, naming the step,
    whether or not a loss was logged at that step, with no traceback on the console."""
    results = tmp_path / "results"
    sets = [
        "stage.learning_rate=1e30",
        "stage.max_steps=3",
        "stage.warmup_ratio=0",
        f"stage.logging_steps={logging_steps}",
        "data.limit=32",
        "eval.limit=4",
    ]
    args = ["train", "--recipe", "recipes/world/sft-full.yaml", "--results", str(results)]
    res = runner.invoke(app, args + [x for s in sets for x in ("--set", s)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), (res.output, res.exception)
    assert "Traceback" not in res.output and "error: run " in res.output and len(res.output.strip().splitlines()) <= 30
    run = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()][-1]
    assert run["status"] == "failed", run["status"]
    assert re.search(r"became non-finite \(.+\) at step [123];", run["error"]), run["error"]
    assert not run["artifacts"].get("model")


def test_the_scheduler_list_is_transformers_own():
    from transformers.trainer_utils import SchedulerType

    from mllmtune.stages.loop import SCHEDULERS

    assert set(SCHEDULERS) == {s.value for s in SchedulerType}


RECIPE = "name: x\nstrategy: {name: full}\ndescription: café\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (RECIPE.encode("latin-1"), "not UTF-8 text"),
        (b"name: \xc3\x28\n", "not UTF-8 text"),
        (b"name: x\x00\n", "not valid YAML"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ],
)
def test_unreadable_recipes_are_one_line(tmp_path, content, message):
    path = tmp_path / "r.yaml"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    for command in (["validate", str(path)], ["train", "--recipe", str(path), "--results", str(tmp_path / "res")]):
        res = runner.invoke(app, command)
        assert res.exit_code == 2, res.output
        assert message in res.output and str(path) in res.output and "Traceback" not in res.output
        assert len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])
def test_a_recipe_with_a_byte_order_mark_is_read(tmp_path, encoding):
    path = tmp_path / "r.yaml"
    path.write_bytes(RECIPE.encode(encoding))
    assert load_recipe(path).description == "café"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("stage.learning_rate=[1, 2", "--set stage.learning_rate: not valid YAML"),
        ("description=!!python/object/apply:os.system [echo hi]", "--set description: not valid YAML"),
        ("stage.epochs=!!binary AAAA", "stage.epochs: Input should be a valid number"),  # a safe tag: no error
    ],
)
def test_set_values_are_parsed_safely_in_one_line(value, message):
    res = runner.invoke(
        app, ["train", "--recipe", "recipes/world/sft-full.yaml", "--results", "/nonexistent/x", "--set", value]
    )
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


def _mutations(data, rng):
    """Randomly mutated copies of a recipe mapping: a dropped key, a swapped type, an out-of-range number, unicode."""
    import copy

    def paths(node, prefix=()):
        if isinstance(node, dict):
            for k, v in node.items():
                yield prefix + (k,)
                yield from paths(v, prefix + (k,))

    weird = [None, -1, 0, 2**70, -(2**70), 1e308, float("inf"), float("nan"), "", "ünï©ødé ✓", [], {}, [1, "a"],
             {"x": {"y": 1}}, True, "1e-4", 3.5, "../../etc", "a" * 5000]  # fmt: skip
    all_paths = list(paths(data))
    for _ in range(12):
        out = copy.deepcopy(data)
        path = all_paths[rng.randrange(len(all_paths))]
        parent = out
        for k in path[:-1]:
            parent = parent[k]
        if rng.random() < 0.3:
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(weird))
        yield out


def test_mutated_shipped_recipes_never_reach_a_traceback(tmp_path):
    """Every shipped recipe, mutated at random (fixed seed), through `validate`: exit 0 or 2 and never a traceback;
    plus each recipe written in other encodings."""
    import random
    from pathlib import Path

    import yaml

    rng = random.Random(0)
    tried, tracebacks = 0, []
    recipes = sorted(Path("recipes").rglob("*.yaml"))
    for n, recipe in enumerate(recipes):
        data = yaml.safe_load(recipe.read_text())
        cases = [yaml.safe_dump(m, allow_unicode=True).encode() for m in _mutations(data, rng)]
        text = recipe.read_text()
        cases += [
            text.encode("utf-16"),
            text.encode("latin-1", "replace"),
            text.encode("utf-8-sig"),
            b"\xff" + text.encode(),
        ]
        for i, content in enumerate(cases):
            path = tmp_path / f"{n}-{i}.yaml"
            path.write_bytes(content)
            res = runner.invoke(app, ["validate", str(path)])
            tried += 1
            if res.exit_code not in (0, 2) or (
                res.exception is not None and not isinstance(res.exception, SystemExit)
            ):
                tracebacks.append((recipe.name, i, res.exit_code, repr(res.exception)[:200]))
    print(f"mutated recipes tried: {tried}, tracebacks: {len(tracebacks)}")
    assert tried >= 400 and not tracebacks, tracebacks[:5]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: x\nstratgey: {name: full}\n", "stratgey: unknown key"),
        ("", "empty: a recipe needs at least name and strategy"),
        ("# only a comment\n", "empty: a recipe needs at least name and strategy"),
    ],
)
def test_messages_name_the_real_culprit(tmp_path, content, message):
    path = tmp_path / "r.yaml"
    path.write_text(content)
    res = runner.invoke(app, ["validate", str(path)])
    assert res.exit_code == 2 and message in res.output, res.output


def test_a_folder_given_as_recipe_is_named_so(tmp_path):
    res = runner.invoke(app, ["validate", str(tmp_path)])
    assert res.exit_code == 2 and "a folder, not a recipe file" in res.output, res.output


def test_artifacts_are_found_from_any_directory(tmp_path, monkeypatch):
    """Records written with a relative results folder still lead to their model from another working directory."""
    from mllmtune.runs import store
    from mllmtune.runs.export import find_run_model

    work = tmp_path / "work"
    (work / "results" / "runs" / "r1" / "model").mkdir(parents=True)
    monkeypatch.chdir(work)
    record = store.RunRecord(
        run_id="r1", created_at="2026-01-01T00:00:00+00:00", status="success", recipe={}, recipe_hash="h",
        name="x", strategy="full", family="selective", stage="sft", seed=0, model={}, trainable_params=1,
        total_params=1, wall_s=1.0, artifacts=store.portable("results", {"model": "results/runs/r1/model"}),
    )  # fmt: skip
    store.append_record(Path("results"), record)
    monkeypatch.chdir(tmp_path)
    assert find_run_model(work / "results", "r1") == (work / "results" / "runs" / "r1" / "model").resolve()


@pytest.mark.parametrize("run_id", ["../../etc", "a/b", "..", ""])
def test_a_run_id_never_becomes_a_path_outside_the_results(tmp_path, run_id):
    from mllmtune.runs.export import find_run_model

    with pytest.raises(UserError, match="not a run id"):
        find_run_model(tmp_path, run_id)


def test_rerunning_a_cancelled_run_says_how_to_resume_it(tmp_path):
    from mllmtune.runs import store

    results = tmp_path / "results"
    recipe = load_recipe("recipes/world/sft-full.yaml", ["stage.max_steps=1"])
    (results / "runs" / "r0" / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    cancelled = store.RunRecord(
        run_id="r0", created_at="2026-01-01T00:00:00+00:00", status="cancelled", error="interrupted by SIGINT",
        recipe=recipe.resolved(), recipe_hash=recipe.hash(), name="sft-full", strategy="full", family="selective",
        stage="sft", seed=0, model={}, trainable_params=1, total_params=1, wall_s=1.0,
        artifacts={"checkpoint": str(results / "runs" / "r0" / "checkpoints" / "checkpoint-1")},
    )  # fmt: skip
    store.append_record(results, cancelled)
    from mllmtune.runs.train import resume_hint

    assert resume_hint(recipe, results) == (
        "note: run r0 of this recipe and seed was cancelled and can be resumed: "
        f"mllmtune train --resume r0 --results {results}"
    )
    later = cancelled.model_copy(update={"run_id": "r1", "status": "success", "artifacts": {}})
    store.append_record(results, later)
    assert resume_hint(recipe, results) is None  # a later success of the same recipe and seed


def _write_parquet(path):
    import pandas as pd

    pd.DataFrame({"question": ["q"], "answer": ["fear"]}).to_parquet(path)


@pytest.mark.parametrize(
    ("name", "source", "write", "message"),
    [
        ("d.jsonl", "jsonl", lambda p: p.write_text('{"question": "q", "answer": "fear"}\n{"question": oops}\n'),
         r"d\.jsonl line 2: not valid JSON"),
        ("d.parquet", "parquet", lambda p: p.write_text("question,answer\nq,fear\n"),
         r"data: .*d\.parquet is not a readable parquet file"),
        ("d.csv", "csv", _write_parquet, r"data: .*d\.csv is not a readable csv file"),
    ],
)  # fmt: skip
def test_damaged_data_files_are_one_line(tmp_path, name, source, write, message):
    from mllmtune.data.sources import FileData, load_examples

    path = tmp_path / name
    write(path)
    spec = FileData(source=source, path=str(path), split="all", labels=["fear", "joy"])
    with pytest.raises(UserError, match=message):
        load_examples(spec, "data")


def test_concurrent_runs_score_the_base_once(tmp_path, monkeypatch):
    """Four runs starting together into one results folder: one scores the base, the others wait and reuse it."""
    import threading
    import time
    from types import SimpleNamespace

    from rich.console import Console

    from mllmtune.runs import store
    from mllmtune.runs import zero_shot as run

    prepared = [SimpleNamespace(name="b", key="b@1", fingerprint="fp-b")]
    scored: list[str] = []

    def slow_evaluate(bundle, names, limit, batch_size, results, progress, template="plain", prepared=None):
        scored.append(threading.current_thread().name)
        time.sleep(0.5)  # long enough for every other run to reach the table before this record lands
        record = store.RunRecord(
            run_id=f"zs-{len(scored)}", created_at=store.now_iso(), status="success",
            recipe={"eval": {"fingerprints": {"b@1": "fp-b"}}}, recipe_hash="h", name="zero-shot", strategy="none",
            family="none", stage="zero-shot", seed=0, model={}, trainable_params=0, total_params=1, wall_s=0.5,
            scores={"b@1": {"accuracy": 50.0}},
        )  # fmt: skip
        store.append_record(results, record)
        return record

    monkeypatch.setattr(run, "evaluate_model", slow_evaluate)
    got: list = []

    def one():
        got.append(run.baseline_scores(None, ["b"], None, 8, tmp_path, None, Console(quiet=True), "plain", prepared))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(scored) == 1
    assert [r["run_id"] for r in store.read_records(tmp_path)[0]] == ["zs-1"]
    assert got == [({"b@1": {"accuracy": 50.0}}, {"b@1": "zs-1"})] * 4


def test_results_are_not_written_through_a_link_out_of_the_folder(tmp_path):
    from mllmtune.runs import store

    outside, results = tmp_path / "outside", tmp_path / "results"
    outside.mkdir()
    results.mkdir()
    (results / "runs").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UserError, match="leads out of the results folder"):
        store.write_predictions(results, "r1", "b@1", [{"id": "1"}])
    with pytest.raises(UserError, match="leads out of the results folder"):
        store.inside(results, results / "runs" / "r1")
    assert not any(outside.iterdir())


def test_a_huge_description_is_refused():
    with pytest.raises(UserError, match="description: "):
        load_recipe("recipes/world/sft-full.yaml", ["description=" + "x" * 20_000])


def test_no_record_carries_null_for_a_non_finite_number(tmp_path):
    """A number that is NaN or infinite is left out of a record (absent reads as unmeasured), never written as null."""
    from mllmtune.runs import store

    record = store.RunRecord(
        run_id="r1", created_at="2026-01-01T00:00:00+00:00", status="success", recipe={}, recipe_hash="h", name="x",
        strategy="full", family="selective", stage="sft", seed=0, model={}, trainable_params=1, total_params=1,
        wall_s=1.0, scores={"b@1": {"accuracy": 50.0, "answer_nll": float("nan")}},
        baseline={"b@1": {"accuracy": 40.0, "answer_nll": float("inf")}},
        train={"steps": 3, "train_loss": float("-inf")},
    )  # fmt: skip
    store.append_record(tmp_path, record)
    line = (tmp_path / "runs.jsonl").read_text()
    assert "NaN" not in line and "Infinity" not in line
    written = json.loads(line)
    assert None not in [v for part in ("scores", "baseline") for m in written[part].values() for v in m.values()]
    assert None not in written["train"].values()
    (back,), _ = store.read_records(tmp_path)
    assert back["scores"] == {"b@1": {"accuracy": 50.0}} and back["baseline"] == {"b@1": {"accuracy": 40.0}}
    assert back["train"] == {"steps": 3}
