"""lmms-eval tasks as the suite's benchmarks: `eval.retention: [lmms:pope, lmms:textvqa_val]`.

A task named `lmms:NAME` joins `BENCHMARKS` when a run starts (not when a recipe is validated, so reading a recipe
never imports lmms-eval), with the version its yaml declares. It is scored through `mllmtune.evaluation.lmms` on the
model in memory, and its per-item rows (id, score) are stored like every other benchmark's, so E/F/O, the paired
intervals and the report treat it the same. A group or tag name (several tasks) is one benchmark whose items are
all of its tasks' items, ids prefixed by task.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from mllmtune.evaluation.benchmarks import BENCHMARKS, Benchmark

PREFIX = "lmms:"


class LmmsSpec(BaseModel):
    """How lmms-eval tasks are found and asked."""

    model_config = ConfigDict(extra="forbid")
    include_path: str | None = Field(
        None,
        description="a folder of lmms-eval task yaml files (with local data: dataset_path: parquet), searched before "
        "lmms-eval's own tasks; what makes a task run offline",
    )
    max_new_tokens: int = Field(128, ge=1, description="cap on each task's generation budget")


def is_lmms(name: str) -> bool:
    return name.startswith(PREFIX) and len(name) > len(PREFIX)


@dataclass(frozen=True)
class LmmsBenchmark(Benchmark):
    include_path: str | None = None

    def examples(self, limit: int | None = None, template: str = "plain") -> list[dict]:
        return []  # lmms-eval owns the items; `evaluation.runner` hands the task to it

    def new_tokens(self, template: str) -> int:
        return self.max_new_tokens


def task_version(name: str, include_path: str | None) -> str:
    """The version the task's yaml metadata declares (its tasks' versions joined for a group); 1 when none."""
    from mllmtune.evaluation import lmms_lookup

    bare = name[len(PREFIX) :]
    index = lmms_lookup.index([bare], include_path)
    versions = []
    for _, cfg in lmms_lookup.leaves(bare, index):
        meta = cfg.get("metadata")
        items = [meta] if isinstance(meta, dict) else meta if isinstance(meta, list) else []
        versions.append(next((str(m["version"]) for m in items if isinstance(m, dict) and "version" in m), "1"))
    unique = sorted(set(versions)) or ["1"]
    return unique[0] if len(unique) == 1 else "+".join(unique)


def check_names(names: list[str], spec: LmmsSpec) -> None:
    """That each named lmms-eval task exists (one line with close matches); its data is checked when a run starts."""
    from mllmtune.evaluation import lmms_lookup

    bare = [n[len(PREFIX) :] for n in dict.fromkeys(names) if is_lmms(n)]
    if bare:
        index = lmms_lookup.index(bare, spec.include_path)
        for name in bare:
            lmms_lookup.known(name, index)


def register(names: list[str], spec: LmmsSpec, retention: list[str]) -> None:
    """Check the recipe's lmms-eval tasks (one line for a missing install, an unknown name, an offline hub task)
    and add them to `BENCHMARKS`."""
    from mllmtune.evaluation import lmms

    wanted = [n for n in dict.fromkeys(names) if is_lmms(n)]
    if not wanted:
        return
    lmms.check_tasks(wanted, spec.include_path)
    for name in wanted:
        BENCHMARKS[name] = LmmsBenchmark(
            name=name,
            version=task_version(name, spec.include_path),  # type: ignore[arg-type]
            role="retention" if name in retention else "target",
            kind="general",
            description=f"lmms-eval task {name[len(PREFIX) :]}",
            max_new_tokens=spec.max_new_tokens,
            include_path=spec.include_path,
        )


def fingerprint(bench: LmmsBenchmark) -> str:
    from mllmtune.evaluation import lmms

    return lmms.task_fingerprint(bench.name, bench.include_path)


def evaluate(model, processor, benches: list[LmmsBenchmark], limit, batch_size, progress):
    """Scores and per-item rows keyed by each benchmark's key; a group's tasks are merged into its one key."""
    from mllmtune.evaluation import lmms

    scores, predictions = {}, {}
    for bench in benches:
        got, rows = lmms.evaluate_tasks(
            model,
            processor,
            [bench.name],
            limit=limit,
            batch_size=batch_size,
            include_path=bench.include_path,
            max_new_tokens=bench.max_new_tokens,
            progress=progress,
        )
        key = bench.key_for("plain")
        if len(got) == 1:
            (only,) = got
            scores[key], predictions[key] = got[only], rows[only]
            continue
        merged = []
        for task_key, task_rows in rows.items():
            task = task_key[len(PREFIX) :].rsplit("@", 1)[0]
            merged += [dict(r, id=f"{task}/{r['id']}", task=task) for r in task_rows]
        scores[key] = {
            "accuracy": 100.0 * sum(r["correct"] for r in merged) / len(merged),
            "n": float(len(merged)),
            **{f"accuracy/{k[len(PREFIX) :].rsplit('@', 1)[0]}": v["accuracy"] for k, v in got.items()},
        }
        predictions[key] = merged
    return scores, predictions
