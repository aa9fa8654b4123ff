"""Recipes: the YAML description of one run, validated before anything heavy happens.

Unknown keys are rejected everywhere (`extra="forbid"`). The `strategy`, `stage` and `data` sections are validated
against the chosen entry's own settings, from registries: strategies (`mllmtune/strategies/registry.py`), stages
(`mllmtune/stages/registry.py`, each stage's settings beside its code), data sources (`mllmtune/data/registry.py`,
plus the file and hub sources). Sections a recipe leaves out take the defaults a plug-in registers
(`mllmtune/config/defaults.py`; the embedded world's: its model, data and benchmarks). The resolved recipe has a
stable hash that identifies the run's configuration.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mllmtune import plugins
from mllmtune.config import defaults
from mllmtune.config.describe import describe
from mllmtune.config.fields import Strict
from mllmtune.config.io import apply_overrides, read_yaml
from mllmtune.data import registry as data_sources
from mllmtune.data.sources import FileData
from mllmtune.errors import UserError
from mllmtune.evaluation.declared import DatasetBenchmarkSpec, find_declaration, read_declaration
from mllmtune.evaluation.lmms_tasks import LmmsSpec, is_lmms
from mllmtune.stages.grpo import GRPOStage
from mllmtune.stages.loop import HASH_IGNORED_STAGE_KEYS
from mllmtune.stages.registry import STAGES
from mllmtune.strategies import REGISTRY

# Plug-ins register their data sources, benchmarks and defaults before the schema below is built from the
# registries (the embedded world is one; `mllmtune.plugins`).
plugins.load()


class ModelSpec(Strict):
    """The base model; its family (and so its module groups) comes from the config's `model_type`."""

    id: str = Field(description="a hub id, a local model folder, or a plug-in's id ('world': the embedded base)")
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        None, description="default: what transformers picks"
    )
    quantization: Literal["none", "8bit", "4bit"] = Field(
        "none", description="load the base quantized (bitsandbytes); the qlora strategy quantizes on its own"
    )
    trust_remote_code: bool = Field(False, description="run the model repository's own Python code")
    processor: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments for the processor (e.g. Qwen2.5-VL's min_pixels / max_pixels); they decide "
        "what the model sees, so they are part of a zero-shot score's fingerprint",
    )


class EvalSpec(Strict):
    datasets: dict[str, DatasetBenchmarkSpec] = Field(
        default_factory=dict,
        description="data sets declared inline (usually one file each in configs/datasets/NAME.yaml, named in "
        "target/retention/also and copied here when the recipe is read)",
    )
    target: list[str] = Field(description="benchmarks of the task (E); default: the plug-in's (the world's three)")
    retention: list[str] = Field(
        default_factory=list, description="general-knowledge benchmarks (F); default: the plug-in's (world-general)"
    )
    also: list[str] | None = Field(
        None,
        description="benchmarks scored for the base and the tuned model and reported beside F, in neither E nor F "
        "(e.g. general sets that hold target-domain items); default: world-emotion-knowledge when the retention "
        "set is the world's, else none",
    )
    lmms: LmmsSpec = Field(default_factory=LmmsSpec, description="lmms-eval tasks (named lmms:TASK)")
    limit: int | None = Field(
        None, ge=1, description="score N items of each benchmark: a seeded sample stratified by label, task or answer"
    )
    batch_size: int = Field(64, ge=1)
    template: Literal["plain", "emo-r3", "think"] | None = Field(
        None, description="answer format asked of emotion benchmarks; default: the stage's"
    )

    @model_validator(mode="before")
    @classmethod
    def _declared_files(cls, data: Any) -> Any:
        """Each named data set that has a declaration file (configs/datasets/NAME.yaml) is read into `datasets`, so
        the resolved recipe (and the run record) holds what is scored."""
        if not isinstance(data, dict):
            return data
        from mllmtune.evaluation.benchmarks import BENCHMARKS

        declared = data.get("datasets") or {}
        if not isinstance(declared, dict):  # pydantic names the problem
            return data
        declared = dict(declared)
        for key in ("target", "retention", "also"):
            names = data.get(key)
            for name in names if isinstance(names, list) else []:
                if not isinstance(name, str) or name in declared or name in BENCHMARKS or is_lmms(name):
                    continue
                path = find_declaration(name)
                if path is not None:
                    declared[name] = read_declaration(path).model_dump(mode="json", exclude_defaults=True)
        return {**data, "datasets": declared} if declared else data

    @field_validator("target", "retention", "also")
    @classmethod
    def _known(cls, names: list[str] | None, info: ValidationInfo) -> list[str] | None:
        from mllmtune.evaluation.benchmarks import BENCHMARKS
        from mllmtune.evaluation.declared import DatasetBenchmark, dataset_dirs

        if names is None:
            return names
        if info.field_name == "target" and not names:
            raise ValueError("empty; name at least one target benchmark (E needs one)")
        declared = info.data.get("datasets") or {}
        registered = {n for n, b in BENCHMARKS.items() if not isinstance(b, DatasetBenchmark)}
        unknown = [n for n in names if n not in registered and n not in declared and not is_lmms(n)]
        if unknown:
            known = ", ".join(sorted(registered | set(declared))) or "none"
            where = " or ".join(str(d / f"{unknown[0]}.yaml") for d in dataset_dirs())
            raise ValueError(
                f"unknown benchmark {unknown[0]!r}; known: {known} (declare it in {where} or under eval.datasets, "
                "or name an lmms-eval task as lmms:TASK)"
            )
        return names

    @model_validator(mode="after")
    def _also(self) -> EvalSpec:
        if self.also is None:
            self.also = []
        for key, names in (("retention", self.retention), ("also", self.also)):
            twice = next((n for n in names if n in self.target or (key == "also" and n in self.retention)), None)
            if twice is not None:
                raise ValueError(f"{key}: {twice!r} is also named above; a set counts in E, in F or beside them, once")
        return self


def _tagged_union(options: dict[str, type[BaseModel]]):
    # Built from a registry, so a new strategy or stage needs no edit here.
    return Annotated[Union[tuple(options.values())], Field(discriminator="name")]  # noqa: UP007


def _variants(section: str) -> dict[str, type[BaseModel]]:
    """The models a tagged section chooses among, by tag."""
    if section == "strategy":
        return {name: s.options for name, s in REGISTRY.items()}
    if section == "stage":
        return {name: s.settings for name, s in STAGES.items()}
    if section == "data":
        return {name: s.spec for name, s in data_sources.SOURCES.items()} | {"files": FileData}
    return {}


# The options the schema below is built from; an entry registered later is not a recipe option (see `validate`).
_SCHEMA = {section: dict(_variants(section)) for section in ("strategy", "stage", "data")}


def _schema_variants(section: str) -> dict[str, type[BaseModel]]:
    return _SCHEMA.get(section, {})


def _data_tag(value: Any) -> str:
    """A registered source by its name (`source: world`); any other `source` is a file or hub source."""
    source = value.get("source") if isinstance(value, dict) else getattr(value, "source", None)
    return source if isinstance(source, str) and source in _SCHEMA["data"] else "files"


def _data_union():
    options = [Annotated[spec, Tag(name)] for name, spec in _SCHEMA["data"].items()]
    return Annotated[Union[tuple(options)], Discriminator(_data_tag)]  # noqa: UP007


class Recipe(Strict):
    name: str = Field(min_length=1)
    description: str = Field("", max_length=4000)
    seed: int = Field(0, ge=0, le=2**32 - 1, description="0 to 2^32 - 1 (numpy's range)")
    model: ModelSpec
    data: _data_union()
    strategy: _tagged_union(_SCHEMA["strategy"])
    stage: _tagged_union(_SCHEMA["stage"]) = Field(default_factory=lambda: STAGES["sft"].settings())
    eval: EvalSpec

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """The plug-ins' defaults for the sections left out; a stage section without a name is the SFT stage."""
        if not isinstance(data, dict):
            return data
        data = defaults.apply(data)
        if isinstance(data.get("stage"), dict) and "name" not in data["stage"]:
            data = {**data, "stage": {"name": "sft", **data["stage"]}}
        return data

    @model_validator(mode="after")
    def _eval_template(self) -> Recipe:
        """Evaluation asks in the format the stage trains (GRPO's template; plain labels after SFT)."""
        if self.eval.template is None:
            self.eval.template = self.stage.template if isinstance(self.stage, GRPOStage) else "plain"
        return self

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def hash(self) -> str:
        """Stable hash of what the run does: everything but its seed and description (seeds are keyed apart)."""
        body = {k: v for k, v in self.resolved().items() if k not in ("seed", "description")}
        body["stage"] = {k: v for k, v in body["stage"].items() if k not in HASH_IGNORED_STAGE_KEYS}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


def validate(data: Any, source: str) -> Recipe:
    if data is None or data == {}:
        raise UserError(f"{source}: empty: a recipe needs at least name and strategy (see recipes/ for examples)")
    if not isinstance(data, dict):
        raise UserError(f"{source}: a recipe must be a mapping of keys, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt key is the likely cause of the "Field required" beside it: name it first.
        errors.sort(key=lambda e: e["type"] != "extra_forbidden")
        first = describe(errors[0], data, Recipe, _schema_variants)
        late = _registered_late(errors[0])
        if late:
            first += f" ({late!r} was registered after the recipe schema was built; register it from a plug-in)"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise UserError(f"{source}: {first}{more}") from None


def _registered_late(err: dict) -> str | None:
    """The name of a strategy or stage the error calls unknown but the registry knows (registered too late)."""
    given = err.get("input")
    section = str(err["loc"][0]) if err.get("loc") else ""
    if err["type"] != "union_tag_invalid" or not isinstance(given, dict) or section not in ("strategy", "stage"):
        return None
    name = given.get("name")
    return name if isinstance(name, str) and name in _variants(section) and name not in _SCHEMA[section] else None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: a folder, not a recipe file")
    if not path.is_file():
        raise UserError(f"recipe file not found: {path}")
    data = read_yaml(path)
    if isinstance(data, dict):
        data = apply_overrides(data, overrides or [])
    return validate(data, str(path))
