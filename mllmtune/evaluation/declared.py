"""Dataset-backed benchmarks: one YAML file per data set, named in a recipe's `eval.target` / `retention` / `also`.

A declaration is data (a source, a metric, a version). It lives in `configs/datasets/NAME.yaml` (or a folder named
by `$MLLMTUNE_DATASETS`), written once and named by every recipe that scores the set; a recipe may also declare a
set inline under `eval.datasets`. Validating a recipe copies each named file's declaration into the recipe, so the
run record holds what was scored. A run registers its declarations in `BENCHMARKS` when it starts (`register_all`),
so evaluation, baselines and reports treat them like a plug-in's. A name declared twice with different meanings is
an error: scores under one `name@version` must mean one thing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mllmtune.data.sources import FileData
from mllmtune.errors import UserError
from mllmtune.evaluation.benchmarks import BENCHMARKS, Benchmark

DATASETS_DIR = Path("configs") / "datasets"  # relative to the working folder, like a recipe's data paths
PLAIN_TOKENS = 16
REASONING_TOKENS = 1024
VQA_ANSWERS = 10  # annotators per question in VQA v2, OK-VQA, TextVQA, VizWiz: what the official metric averages
_LOADED: dict[tuple[str, str], list[dict]] = {}  # a declared set's items, read (and images hashed) once per run


def forget_loaded() -> None:
    """Drop the items read for the previous run (a bench runs many in one process)."""
    _LOADED.clear()


Metric = Literal["label", "exact_match", "vqa_soft", "multiple_choice", "yes_no"]


class DatasetBenchmarkSpec(BaseModel):
    """One declared benchmark; bump `version` whenever its data or scoring changes meaning."""

    model_config = ConfigDict(extra="forbid")
    data: FileData
    version: int = Field(1, ge=1)
    metric: Metric | None = Field(
        None,
        description="label (emotion accuracy and macro-F1), exact_match (normalized), vqa_soft (the official VQA "
        "accuracy: mean over the leave-one-annotator-out subsets of min(#matches / 3, 1), after the official answer "
        "normalisation; for sets with ten answers per question), multiple_choice (the option's letter), yes_no; "
        "default: label for emotion data, exact_match for VQA",
    )
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        description="generation budget; default 16, or 1024 when an emotion set is asked in a reasoning template "
        "(emo-r3, think), since a real model's reasoning cut short loses its \\boxed{} answer",
    )
    description: str = ""


@dataclass(frozen=True)
class DatasetBenchmark(Benchmark):
    spec: DatasetBenchmarkSpec | None = None
    metric: Metric = "label"

    def examples(self, limit: int | None = None, template: str = "plain") -> list[dict]:
        """The declared items (ids from the source, or hashes of image and question); `limit` (or the source's own
        `limit`) is a seeded sample stratified by label, or by answer for yes/no and multiple choice."""
        from mllmtune.data.sources import load_examples
        from mllmtune.evaluation.sampling import stratified_sample

        data = self.spec.data
        whole = data.model_copy(update={"limit": None})
        cache_key = (self.name, whole.model_dump_json())
        if cache_key not in _LOADED:  # a run reads a set for the overlap check, the baseline and the tuned model
            _LOADED[cache_key] = list(load_examples(whole, f"eval.datasets.{self.name}.data"))
        rows = _LOADED[cache_key]
        if self.metric == "vqa_soft":  # the official formula over fewer annotators is no soft accuracy (1 answer: 0)
            short = next((r for r in rows if len(r["answers"]) < VQA_ANSWERS), None)
            if short is not None:
                raise UserError(
                    f"{short['source_row']}: {len(short['answers'])} answer(s), and metric vqa_soft needs the "
                    f"{VQA_ANSWERS} annotators' answers of VQA-style sets; set eval.datasets.{self.name}.metric: "
                    "exact_match, or map the answers column (columns.answers)"
                )
        limit = min(x for x in (limit, data.limit, len(rows)) if x is not None)
        by_answer = self.metric in ("label", "yes_no", "multiple_choice")
        rows = stratified_sample(rows, limit, [r["id"] for r in rows], (lambda r: r["answer"]) if by_answer else None)
        if self.kind == "emotion" and template != "plain":
            from mllmtune.emo_r3.template import apply

            rows = [dict(r, prompt=apply(template, r["prompt"]), template=template) for r in rows]
        return rows

    def new_tokens(self, template: str) -> int:
        if self.spec is not None and self.spec.max_new_tokens is not None:
            return self.spec.max_new_tokens
        return REASONING_TOKENS if self.kind == "emotion" and template != "plain" else PLAIN_TOKENS

    def score_one(self, example: dict, output: str) -> tuple[str | None, bool | float]:
        """(parsed prediction, correct); VQA soft accuracy gives a fraction instead of a bool."""
        from mllmtune.evaluation import parse

        answer = example["answer"]
        if self.metric == "label":
            from mllmtune.emo_r3.template import predicted_label  # the released strict reading in a reasoning template

            pred = predicted_label(output, example.get("template", "plain"), example["labels"])
            return pred, pred == answer
        if self.metric == "yes_no":
            pred = parse.parse_yes_no(output)
            return pred, pred is not None and pred == parse.normalize(answer)
        if self.metric == "multiple_choice":
            pred = parse.choice_match(output, example["choices"])
            return pred, pred is not None and pred == answer.upper()
        pred = parse.answer_span(output).strip()
        if self.metric == "vqa_soft":
            from mllmtune.evaluation.vqa import vqa_accuracy

            return pred, vqa_accuracy(pred, example["answers"]) if pred else 0.0
        return pred, any(parse.exact_match(output, a) for a in example["answers"])

    def metrics(self, examples: list[dict], preds: list[str | None], correct: list, outputs=None) -> dict[str, float]:
        from sklearn.metrics import f1_score

        out = {"accuracy": 100.0 * sum(correct) / max(1, len(correct)), "n": float(len(correct))}
        if self.metric == "label":
            gold = [ex["answer"] for ex in examples]
            y_pred = [p if p is not None else "<none>" for p in preds]
            out["macro_f1"] = 100.0 * f1_score(
                gold, y_pred, labels=sorted(set(gold)), average="macro", zero_division=0
            )
        out["parsed"] = 100.0 * sum(p not in (None, "") for p in preds) / max(1, len(preds))
        template = examples[0].get("template", "plain") if examples else "plain"
        if self.metric == "label" and template != "plain" and outputs is not None:
            from mllmtune.evaluation.reasoning import answer_metrics

            out |= answer_metrics(examples, outputs, template)
        return out


def register(name: str, spec: DatasetBenchmarkSpec, role: Literal["target", "retention"]) -> Benchmark:
    """Add a declared benchmark to `BENCHMARKS`; declaring it again with the same data and metric is a no-op.

    Its role only decides whether the answer NLL is also measured, so a set that is one recipe's target and
    another's retention is registered as retention.
    """
    if name in BENCHMARKS and not isinstance(BENCHMARKS[name], DatasetBenchmark):
        raise ValueError(f"{name!r} is a plug-in's benchmark; declare the data set under another name")
    metric = spec.metric or ("label" if spec.data.task == "emotion" else "exact_match")
    bench = DatasetBenchmark(
        name=name,
        version=spec.version,
        role=role,
        kind="emotion" if metric == "label" else "general",
        description=spec.description or f"{spec.data.source} {spec.data.path} ({spec.data.split})",
        max_new_tokens=spec.max_new_tokens or PLAIN_TOKENS,
        spec=spec,
        metric=metric,
    )
    known = BENCHMARKS.get(name)
    if known is not None and getattr(known, "spec", None) != spec:
        raise ValueError(
            f"benchmark {name!r} is already declared with another meaning (in another recipe of this run); "
            "use the same declaration, or rename it or bump its version"
        )
    if known is not None and known.role == "retention":  # a target elsewhere, retention here: keep answer_nll
        return known
    BENCHMARKS[name] = bench
    return bench


def dataset_dirs() -> list[Path]:
    """Where declaration files are looked for: `$MLLMTUNE_DATASETS` (folders, `os.pathsep`-separated), then
    `configs/datasets`."""
    extra = [Path(d) for d in os.environ.get("MLLMTUNE_DATASETS", "").split(os.pathsep) if d]
    return [*extra, DATASETS_DIR]


def find_declaration(name: str) -> Path | None:
    """The file declaring data set `name` (`NAME.yaml`), or None."""
    return next((d / f"{name}.yaml" for d in dataset_dirs() if (d / f"{name}.yaml").is_file()), None)


def read_declaration(path: Path) -> DatasetBenchmarkSpec:
    """A declaration file, validated on its own: a problem is one line naming the file and the key."""
    from pydantic import ValidationError

    from mllmtune.config.io import read_yaml

    data = read_yaml(path)
    try:
        return DatasetBenchmarkSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise UserError(f"{path}: {key}: {err['msg'].removeprefix('Value error, ')}") from None


def register_all(ev) -> None:
    """Register a recipe's declared sets (its `eval` section) under their names, before a run scores them."""
    for name, spec in ev.datasets.items():
        try:
            register(name, spec, "target" if name in ev.target else "retention")
        except ValueError as exc:
            raise UserError(f"eval.datasets.{name}: {exc}") from None
