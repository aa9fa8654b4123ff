"""docs/recipes.md, generated from the recipe schema: every key with its type, default and description.

`python -m mllmtune.config.reference > docs/recipes.md` (or `make docs`) rewrites it; tests/test_reference.py fails
when the file is stale, so the reference never drifts from the code.
"""

from __future__ import annotations

import enum
import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

HEADER = """# Recipe reference

Generated from the schema by `python -m mllmtune.config.reference > docs/recipes.md` (`make docs`); do not edit by
hand. A recipe is one YAML file; unknown keys are refused with the keys allowed there. Start from a shipped recipe:
`mllmtune cp qwen2.5-vl-3b/lora my-lora.yaml` (`mllmtune ls recipes` lists them). Sections left out take the
defaults of the installed plug-ins (the embedded world's: `model.id: world`, `data.source: world`, its benchmarks).
"""


def _type(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type(args[0])
    if origin is Literal:
        return " | ".join(f"`{a}`" for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type(a) for a in args if a is not type(None)) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        return f"list of {_type(args[0])}" if args else "list"
    if origin is dict:
        return f"map {_type(args[0])} → {_type(args[1])}" if args else "map"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(f"`{m.value}`" for m in annotation)
    return getattr(annotation, "__name__", str(annotation))


def _default(field) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
        return "(section)" if isinstance(value, BaseModel) else f"`{value!r}`"
    if field.default is PydanticUndefined:
        return ""
    return f"`{field.default!r}`"


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("|", "\\|")).strip()


def table(model: type[BaseModel], prefix: str, skip: tuple[str, ...] = ()) -> str:
    rows = ["", "| key | type | default | description |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        rows.append(
            f"| `{prefix}{name}` | {_cell(_type(field.annotation))} | {_cell(_default(field))} | "
            f"{_cell(field.description or '')} |"
        )
    return "\n".join(rows) + "\n"


def _doc(model: type[BaseModel]) -> str:
    doc = (model.__doc__ or "").strip()
    return "" if not doc or doc.startswith(("Usage docs", "!!!")) else re.sub(r"\s+", " ", doc) + "\n\n"


def markdown() -> str:
    from mllmtune.config.recipe import EvalSpec, ModelSpec, Recipe, _variants
    from mllmtune.evaluation.declared import DatasetBenchmarkSpec
    from mllmtune.evaluation.lmms_tasks import LmmsSpec
    from mllmtune.fleet.bench import Suite, SuiteRun
    from mllmtune.stages.grpo import ReflectionSpec
    from mllmtune.strategies import REGISTRY

    parts = [HEADER, "## Top level\n", table(Recipe, "", skip=("model", "data", "strategy", "stage", "eval"))]
    parts += ["\n## `model`\n", _doc(ModelSpec), table(ModelSpec, "model.")]
    parts += ["\n## `data`\n", "Chosen by `data.source`.\n"]
    for name, spec in _variants("data").items():
        files = "files and hub data sets (`parquet`, `jsonl`, `csv`, `imagefolder`, `hub`)"
        title = files if name == "files" else name
        parts += [f"\n### `data.source`: {title}\n", _doc(spec), table(spec, "data.")]
    parts += ["\n## `strategy`\n", "Chosen by `strategy.name`; `mllmtune ls strategies` describes each.\n"]
    for name, strategy in REGISTRY.items():
        parts += [f"\n### `strategy.name: {name}` ({strategy.family})\n", table(strategy.options, "strategy.")]
    parts += ["\n## `stage`\n", "Chosen by `stage.name` (default `sft`).\n"]
    for name, settings in _variants("stage").items():
        parts += [f"\n### `stage.name: {name}`\n", _doc(settings), table(settings, "stage.")]
    parts += ["\n### `stage.reflection` (grpo)\n", _doc(ReflectionSpec), table(ReflectionSpec, "stage.reflection.")]
    parts += ["\n## `eval`\n", table(EvalSpec, "eval."), "\n### `eval.lmms`\n", table(LmmsSpec, "eval.lmms.")]
    parts += [
        "\n## A data set declaration (`configs/datasets/NAME.yaml`, or `eval.datasets.NAME`)\n",
        _doc(DatasetBenchmarkSpec),
        table(DatasetBenchmarkSpec, ""),
    ]
    parts += ["\n## A suite (`benchmarks/NAME.yaml`, run by `mllmtune bench`)\n", table(Suite, "")]
    parts += ["\n### An entry of `runs` (a path, or this section)\n", table(SuiteRun, "runs[].")]
    return "".join(parts)


if __name__ == "__main__":
    print(markdown(), end="")
