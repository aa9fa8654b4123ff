"""Start-up time and how evaluation and reporting grow with size, so their cost at any size can be read off."""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def startup(repeats: int) -> dict[str, list[float]]:
    """Wall time of `mllmtune --help` and of `python -c pass`, alternated, in fresh processes."""
    cli = shutil.which("mllmtune", path=str(Path(sys.executable).parent)) or shutil.which("mllmtune")
    help_cmd = [cli, "--help"] if cli else [sys.executable, "-m", "mllmtune", "--help"]
    out: dict[str, list[float]] = {"help": [], "pass": []}
    for _ in range(repeats):
        for key, cmd in (("help", help_cmd), ("pass", [sys.executable, "-c", "pass"])):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            out[key].append(time.perf_counter() - t0)
    return out


def eval_seconds(model_dir: Path, rows: list[dict], batch_size: int = 64) -> float:
    """Seconds to evaluate `rows` as `evaluate` does for an emotion benchmark: batched greedy generation, parsing and
    metrics (`emoscenes-photo`'s scorer; the rows are given, so the world need not be built)."""
    from mllmtune.evaluation.benchmarks import BENCHMARKS
    from mllmtune.evaluation.generate import generate
    from mllmtune.models.bundle import load_bundle

    bundle = load_bundle(str(model_dir))
    bench = BENCHMARKS["emoscenes-photo"]
    examples = [dict(r, template="plain") for r in rows]
    t0 = time.perf_counter()
    outputs = generate(bundle.model, bundle.processor, examples, batch_size, bench.new_tokens("plain"))
    scored = [bench.score_one(ex, out) for ex, out in zip(examples, outputs, strict=True)]
    bench.metrics(examples, [p for p, _ in scored], [c for _, c in scored], outputs)
    return time.perf_counter() - t0


def synthetic_table(results: Path, n: int, recipes: int = 50, seed: int = 0) -> None:
    """`n` run records (plus a zero-shot row) over `recipes` recipes and many seeds, without per-sample predictions."""
    from mllmtune.runs import store

    rng = random.Random(seed)
    results.mkdir(parents=True, exist_ok=True)
    keys = ["emoscenes-photo@1", "emoscenes-art@1", "emoscenes-web@1", "world-general@1"]
    evals = {"target": [k.split("@")[0] for k in keys[:3]], "retention": ["world-general"], "limit": None}

    def scores() -> dict:
        return {
            k: {"accuracy": rng.uniform(20, 90), "n": 100.0} | ({"answer_nll": 1.0} if "general" in k else {})
            for k in keys
        }

    base = scores()
    common = dict(
        created_at=store.now_iso(),
        status="success",
        model={"id": "world", "revision": "3"},
        wall_s=1.0,
        total_params=1000,
        peak_mem_mb=1.0,
    )
    lines = [
        store.RunRecord(
            run_id="zs",
            recipe={"eval": {"benchmarks": keys, "limit": None}},
            recipe_hash="zs",
            name="zero-shot",
            strategy="none",
            family="none",
            stage="zero-shot",
            seed=0,
            trainable_params=0,
            scores=base,
            **common,
        ).model_dump_json()
    ]
    for i in range(n):
        r = i % recipes
        lines.append(
            store.RunRecord(
                run_id=f"r{i}",
                recipe={"eval": evals},
                recipe_hash=f"h{r}",
                name=f"recipe-{r}",
                strategy="lora",
                family="reparameterization",
                stage="sft",
                seed=i // recipes,
                trainable_params=10,
                scores=scores(),
                baseline=base,
                **common,
            ).model_dump_json()
        )
    store.Results(results).table.write_text("\n".join(lines) + "\n")


def report_seconds(n: int) -> float:
    """Seconds of `mllmtune report` (read, aggregate, CSVs, plots, report.md) over a table of `n` records."""
    from rich.console import Console

    from mllmtune.report.write import run_report

    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        synthetic_table(results, n)
        quiet = Console(file=io.StringIO(), width=200)
        t0 = time.perf_counter()
        run_report(results, None, quiet, quiet)
        return time.perf_counter() - t0


if __name__ == "__main__":
    print(json.dumps(startup(3)))
