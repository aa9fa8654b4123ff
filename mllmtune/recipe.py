"""Recipes: the YAML description of one run, validated before anything heavy happens.

Unknown keys are rejected everywhere (`extra="forbid"`), the strategy section is validated against the chosen
strategy's own options, and the resolved recipe has a stable hash that identifies the run's configuration.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mllmtune.errors import UserError
from mllmtune.evaluation.declared import DatasetBenchmarkSpec
from mllmtune.sources import FileData
from mllmtune.strategies import REGISTRY


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(Strict):
    """The base model; its family (and so its module groups) comes from the config's `model_type`."""

    id: str = Field("world", description="'world' (the embedded base), a hub id, or a local path")
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        None, description="default: what transformers picks"
    )
    quantization: Literal["none", "8bit", "4bit"] = Field(
        "none", description="load the base quantized (bitsandbytes); the qlora strategy quantizes on its own"
    )
    trust_remote_code: bool = Field(False, description="run the model repository's own Python code")


class WorldData(Strict):
    source: Literal["world"] = "world"
    domain: Literal["photo", "art", "web"] = "photo"
    split: str = "train"
    limit: int | None = Field(None, ge=1, description="use only the first N examples")


def _data_source(value: Any) -> str:
    source = value.get("source", "world") if isinstance(value, dict) else getattr(value, "source", "world")
    return "world" if source == "world" else "files"


# `source: world` (the default) or a file / hub source (see mllmtune/sources.py).
DataSpec = Annotated[
    Union[Annotated[WorldData, Tag("world")], Annotated[FileData, Tag("files")]],  # noqa: UP007
    Discriminator(_data_source),
]


class EvalSpec(Strict):
    datasets: dict[str, DatasetBenchmarkSpec] = Field(
        default_factory=dict, description="dataset-backed benchmarks, declared here and named in target/retention"
    )
    target: list[str] = Field(default_factory=lambda: ["emoscenes-photo", "emoscenes-art", "emoscenes-web"])
    retention: list[str] = Field(default_factory=lambda: ["world-general"])
    limit: int | None = Field(None, ge=1, description="score only the first N examples of each benchmark")
    batch_size: int = Field(64, ge=1)

    @field_validator("target", "retention")
    @classmethod
    def _known(cls, names: list[str], info: ValidationInfo) -> list[str]:
        from mllmtune.evaluation.declared import BUILTIN

        declared = info.data.get("datasets") or {}
        unknown = [n for n in names if n not in BUILTIN and n not in declared]
        if unknown:
            known = ", ".join(sorted(BUILTIN | set(declared)))
            raise ValueError(f"unknown benchmark {unknown[0]!r}; known: {known} (or declare it under eval.datasets)")
        return names

    @model_validator(mode="after")
    def _register(self) -> EvalSpec:
        """Declared benchmarks join `BENCHMARKS`, so the evaluation path finds them by name like the world's."""
        from mllmtune.evaluation.declared import register

        for name, spec in self.datasets.items():
            register(name, spec, "retention" if name in self.retention else "target")
        return self


class SFTStage(Strict):
    name: Literal["sft"] = "sft"
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="overrides epochs when > 0")
    learning_rate: float = Field(1e-4, gt=0)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    lr_scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    logging_steps: int = Field(10, ge=1)
    gradient_checkpointing: bool = False
    save_steps: int = Field(0, ge=0, description="also checkpoint every N steps (0: only when interrupted)")
    group_by_length: bool = Field(
        False,
        description="batch examples of similar length together: less padding, but on a mixed-task set each batch "
        "becomes one task, which hurt learning in the world's pretraining (loss 1.55 vs 0.79 after 100 steps)",
    )


def _strategy_union():
    # Built from the registry, so a new strategy needs no edit here.
    options = tuple(s.options for s in REGISTRY.values())
    return Annotated[Union[options], Field(discriminator="name")]  # noqa: UP007


class Recipe(Strict):
    name: str
    description: str = ""
    seed: int = 0
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=WorldData)
    strategy: _strategy_union()
    stage: SFTStage = Field(default_factory=SFTStage)
    eval: EvalSpec = Field(default_factory=EvalSpec)

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def hash(self) -> str:
        """Stable hash of what the run does: everything but its seed and description (seeds are keyed apart)."""
        body = {k: v for k, v in self.resolved().items() if k not in ("seed", "description")}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def apply_overrides(data: dict, overrides: list[str], where: str = "--set") -> dict:
    """Apply `a.b=c` overrides; values are parsed as YAML so `1e-4`, `true` and `[a, b]` get their types."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"{where} {item!r}: expected KEY=VALUE, e.g. stage.learning_rate=1e-4")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"{where} {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def _describe_error(err: dict, data: dict) -> str:
    loc = [str(x) for x in err["loc"]]
    # Drop the discriminator tag pydantic inserts ("strategy.bitfit.rank" -> "strategy.rank").
    if len(loc) >= 2 and loc[0] == "strategy" and loc[1] in REGISTRY:
        loc = [loc[0]] + loc[2:]
    if len(loc) >= 2 and loc[0] == "data" and loc[1] in ("world", "files"):
        loc = [loc[0]] + loc[2:]
    key = ".".join(loc) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
        if loc[0] == "strategy" and isinstance(data.get("strategy"), dict):
            name = data["strategy"].get("name")
            if name in REGISTRY:
                allowed = ", ".join(REGISTRY[name].options.model_fields)
                msg = f"not an option of strategy {name!r} (its options: {allowed})"
        else:
            allowed = _allowed_keys(loc[:-1])
            if allowed:
                msg += f" (expected one of: {', '.join(allowed)})"
    elif err["type"] == "union_tag_invalid":
        msg = (
            f"unknown strategy {err['input'].get('name')!r}; known: {', '.join(sorted(REGISTRY))}"
            if isinstance(err.get("input"), dict)
            else msg
        )
    elif err["type"] == "union_tag_not_found":
        msg = f"missing 'name'; known strategies: {', '.join(sorted(REGISTRY))}"
    return f"{key}: {msg}"


def _allowed_keys(path: list[str]) -> list[str]:
    model: type[BaseModel] = Recipe
    for part in path:
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(model.model_fields)


def validate(data: Any, source: str) -> Recipe:
    if not isinstance(data, dict):
        raise UserError(f"{source}: a recipe must be a mapping of keys, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        first = _describe_error(exc.errors()[0], data)
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise UserError(f"{source}: {first}{more}") from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if isinstance(data, dict):
        data = apply_overrides(data, overrides or [])
    return validate(data, str(path))
