"""The base model's zero-shot scores: scored once per model and item set (a fingerprint), then reused by every run
that tunes that model on those items."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from rich.console import Console

from mllmtune.evaluation.benchmarks import BENCHMARKS
from mllmtune.runs import store


def model_info(bundle) -> dict:
    return {"id": bundle.model_id, "revision": bundle.revision, "family": bundle.family}


def scored_model(bundle) -> dict:
    """What of the model decides a zero-shot score (the baseline's key, with the data's fingerprint)."""
    return {
        "id": bundle.model_id,
        "revision": bundle.revision,
        "dtype": getattr(bundle, "dtype", None),
        "quantization": getattr(bundle, "quantization", None),
        "attn_implementation": getattr(bundle, "attn_implementation", None),
        **({"processor": bundle.processor_kwargs} if getattr(bundle, "processor_kwargs", None) else {}),
    }


def eval_keys(names: list[str], template: str = "plain") -> list[str]:
    return [BENCHMARKS[n].key_for(template) for n in names]


def baseline_scores(
    bundle,
    names: list[str],
    limit: int | None,
    batch_size: int,
    results: Path,
    progress,
    console: Console,
    template: str = "plain",
    prepared=None,
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Zero-shot scores of the untuned model and the zero-shot run each comes from, keyed by benchmark.

    A stored zero-shot score is reused only under the same fingerprint (model, dtype, quantization, the items'
    ids, prompts and answers, the token budget: see `evaluation.runner.Prepared`). Benchmarks not scored yet are
    evaluated now and appended as a zero-shot record, so every (model, evaluation) gets its baseline row once.
    """
    from mllmtune.evaluation.runner import prepare

    prepared = prepared if prepared is not None else prepare(names, limit, template, scored_model(bundle))
    # One run at a time looks for the base's scores and, if they are missing, scores and records them: runs started
    # together into one results folder wait here and then reuse that record.
    with store.zero_shot_lock(results):
        return _baseline_locked(bundle, limit, batch_size, results, progress, console, template, prepared)


def _baseline_locked(bundle, limit, batch_size, results, progress, console, template, prepared):
    records, _ = store.read_records(results)  # ([], []) when there is no table yet
    found: dict[str, tuple[dict[str, float], str]] = {}
    for r in records:
        if r.get("stage") == "zero-shot" and r.get("status") == "success":
            for key, fp in ((r.get("recipe") or {}).get("eval") or {}).get("fingerprints", {}).items():
                if key in r.get("scores", {}):
                    found[fp] = (r["scores"][key], r["run_id"])
    missing = [p for p in prepared if p.fingerprint not in found]
    if missing:
        asked = "" if template == "plain" else f" (asked in the {template} template)"
        console.print(f"scoring the base model zero-shot on {', '.join(p.name for p in missing)}{asked}")
        record = evaluate_model(
            bundle,
            [p.name for p in missing],
            limit,
            batch_size,
            results,
            progress,
            template=template,
            prepared=missing,
        )
        found.update({p.fingerprint: (record.scores[p.key], record.run_id) for p in missing})
    return {p.key: found[p.fingerprint][0] for p in prepared}, {p.key: found[p.fingerprint][1] for p in prepared}


def evaluate_model(
    bundle,
    names: list[str],
    limit: int | None,
    batch_size: int,
    results: Path,
    progress,
    seed: int = 0,
    template: str = "plain",
    prepared=None,
) -> store.RunRecord:
    """Score a model as it is and append a zero-shot record (with each benchmark's fingerprint)."""
    from transformers import set_seed

    from mllmtune.evaluation.runner import evaluate, prepare
    from mllmtune.strategies.targets import count_parameters

    set_seed(seed)
    t0 = time.time()
    prepared = prepared if prepared is not None else prepare(names, limit, template, scored_model(bundle))
    scores, predictions = evaluate(
        bundle.model, bundle.processor, names, limit, batch_size, progress, template, prepared=prepared
    )
    recipe = {
        "model": model_info(bundle) | scored_model(bundle),
        "eval": {
            "benchmarks": names,
            "limit": limit,
            "template": template,
            "fingerprints": {p.key: p.fingerprint for p in prepared},
        },
    }
    run_id = store.new_run_id(f"zero-shot-{Path(bundle.model_id).name}")
    for key, rows in predictions.items():
        store.write_predictions(results, run_id, key, rows)
    _, total = count_parameters(bundle.model)
    folder = store.Results(results)
    record = folder.record(
        status="success",
        t0=t0,
        run_id=run_id,
        recipe=recipe,
        recipe_hash=hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12],
        name="zero-shot",
        strategy="none",
        family="none",
        stage="zero-shot",
        seed=seed,
        model=model_info(bundle),
        trainable_params=0,
        total_params=total,
        scores=scores,
        artifacts={"predictions": folder.run(run_id)},
    )
    store.append_record(results, record)
    return record
