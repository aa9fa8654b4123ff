"""Evaluate a model on benchmarks by generating answers in batches and parsing them."""

from __future__ import annotations

import json
from dataclasses import dataclass

from mllmtune.evaluation.benchmarks import BENCHMARKS, Benchmark
from mllmtune.evaluation.generate import answer_nll, generate


@dataclass
class Prepared:
    """One benchmark ready to score: its items (the `limit` sample), token budget and fingerprint.

    The fingerprint hashes what decides the base model's score on it: the model (id, revision, dtype, quantization,
    attention implementation), the benchmark's key and metric, the token budget, and each item's id, prompt, image
    bytes (hash) and reference answers (which covers the prompt template and the limit sample). A zero-shot score is
    reused only under the same fingerprint, so a re-declared data set or a new prompt is scored again.
    """

    name: str
    key: str
    examples: list[dict]
    new_tokens: int
    fingerprint: str


def prepare(names: list[str], limit: int | None, template: str = "plain", model: dict | None = None) -> list[Prepared]:
    from mllmtune.evaluation.lmms_tasks import LmmsBenchmark, fingerprint
    from mllmtune.evaluation.sampling import digest

    out = []
    for name in names:
        bench: Benchmark = BENCHMARKS[name]
        examples = bench.examples(limit, template)
        tokens = bench.new_tokens(template)
        key = bench.key_for(template)
        if isinstance(bench, LmmsBenchmark):  # lmms-eval picks the items: its task's content and the limit decide
            items = {"task": fingerprint(bench), "limit": limit}
        else:  # what is asked (prompt, image bytes) and what a reply is scored against (answer, answers, choices)
            fields = ("id", "prompt", "answer", "answers", "choices", "image_sha")
            items = [[str(ex.get(f)) for f in fields] for ex in examples]
        scoring = getattr(bench, "metric", None)  # a declared set's metric; the world's benchmarks score one way
        body = {"model": model or {}, "key": key, "tokens": tokens, "metric": scoring, "items": items}
        out.append(Prepared(name, key, examples, tokens, digest(json.dumps(body, sort_keys=True))))
    return out


def evaluate(
    model,
    processor,
    names: list[str],
    limit: int | None = None,
    batch_size: int = 64,
    progress=None,
    template: str = "plain",
    prepared: list[Prepared] | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, list[dict]]]:
    """Scores `{key: {metric: value}}` and per-item predictions (with each item's stable `id`) per benchmark;
    emotion benchmarks are asked in `template` (keys from `Benchmark.key_for`)."""
    from mllmtune.evaluation import lmms_tasks

    scores: dict[str, dict[str, float]] = {}
    predictions: dict[str, list[dict]] = {}
    items = prepared if prepared is not None else prepare(names, limit, template)
    standard = [BENCHMARKS[p.name] for p in items if isinstance(BENCHMARKS[p.name], lmms_tasks.LmmsBenchmark)]
    if standard:  # scored by lmms-eval on this model, stored like the rest
        got = lmms_tasks.evaluate(model, processor, standard, limit, batch_size, progress)
        scores |= got[0]
        predictions |= got[1]
    for item in items:
        bench: Benchmark = BENCHMARKS[item.name]
        if isinstance(bench, lmms_tasks.LmmsBenchmark):
            continue
        examples = item.examples
        task = progress.add_task(f"eval {item.name}", total=len(examples)) if progress else None
        advance = (lambda n, t=task: progress.advance(t, n)) if progress else None
        outputs = generate(model, processor, examples, batch_size, item.new_tokens, advance)
        scored = [bench.score_one(ex, out) for ex, out in zip(examples, outputs, strict=True)]
        preds = [p for p, _ in scored]
        correct = [c for _, c in scored]
        metrics = bench.metrics(examples, preds, correct, outputs)
        if bench.role == "retention":
            metrics["answer_nll"] = answer_nll(model, processor, examples, batch_size)
        scores[item.key] = metrics
        predictions[item.key] = [
            {
                "id": str(ex["id"]),
                "index": i,
                "answer": ex["answer"],
                "output": out,
                "pred": p,
                "correct": c,
                **({"subset": ex["subset"]} if "subset" in ex else {}),
            }
            for i, (ex, out, p, c) in enumerate(zip(examples, outputs, preds, correct, strict=True))
        ]
        if progress:
            progress.remove_task(task)
    return scores, predictions
