"""Recipes: the YAML description of one run, validated before anything heavy happens.

Unknown keys are rejected everywhere (`extra="forbid"`), the strategy section is validated against the chosen
strategy's own options, and the resolved recipe has a stable hash that identifies the run's configuration.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

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

from mllmtune.data.sources import FileData
from mllmtune.errors import UserError
from mllmtune.evaluation.declared import DatasetBenchmarkSpec
from mllmtune.evaluation.lmms_tasks import LmmsSpec, is_lmms
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
    processor: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments for the processor (e.g. Qwen2.5-VL's min_pixels / max_pixels); they decide "
        "what the model sees, so they are part of a zero-shot score's fingerprint",
    )


class WorldData(Strict):
    source: Literal["world"] = "world"
    domain: Literal["photo", "art", "web"] = "photo"
    split: str = "train"
    limit: int | None = Field(None, ge=1, description="use only the first N examples")

    @field_validator("split")
    @classmethod
    def _world_split(cls, value: str) -> str:
        return _one_of(value, WORLD_SPLITS, "the world has no split")


def _data_source(value: Any) -> str:
    source = value.get("source", "world") if isinstance(value, dict) else getattr(value, "source", "world")
    return "world" if source == "world" else "files"


# `source: world` (the default) or a file / hub source (see mllmtune/data/sources.py).
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

    @field_validator("target", "retention", "also")
    @classmethod
    def _known(cls, names: list[str] | None, info: ValidationInfo) -> list[str] | None:
        from mllmtune.evaluation.declared import BUILTIN

        if names is None:
            return names
        if info.field_name == "target" and not names:
            raise ValueError("empty; name at least one target benchmark (E needs one)")
        declared = info.data.get("datasets") or {}
        unknown = [n for n in names if n not in BUILTIN and n not in declared and not is_lmms(n)]
        if unknown:
            known = ", ".join(sorted(BUILTIN | set(declared)))
            raise ValueError(
                f"unknown benchmark {unknown[0]!r}; known: {known} (or declare it under eval.datasets, or name an "
                "lmms-eval task as lmms:TASK)"
            )
        return names

    @model_validator(mode="after")
    def _register(self) -> EvalSpec:
        """Declared benchmarks join `BENCHMARKS`, so the evaluation path finds them by name like the world's."""
        from mllmtune.evaluation.declared import register

        if self.also is None:
            self.also = ["world-emotion-knowledge"] if "world-general" in self.retention else []
        for name, spec in self.datasets.items():
            register(name, spec, "target" if name in self.target else "retention")
        return self


# Autocast precision of a stage's forward and backward; weights and optimizer stay float32.
Precision = Literal["no", "bf16", "fp16"]


WORLD_SPLITS = ("test", "train")  # what mllmtune/world/build.py writes for every data set
# transformers' own scheduler names (`transformers.trainer_utils.SchedulerType`; copied so that validating a recipe
# does not import torch; tests/test_robust.py checks the copy against transformers).
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)


def _one_of(value: str, known: tuple[str, ...], problem: str) -> str:
    """`value` if it is one of `known`; else a ValueError that lists them (the recipe key is added by `validate`)."""
    if value not in known:
        raise ValueError(f"{problem} {value!r}; known: {', '.join(known)}")
    return value


# Beyond these a recipe is a typo, not an experiment (10^7 steps of one second each are four months).
MAX_STEPS_BOUND = 10_000_000
MAX_EPOCHS_BOUND = 10_000

# Stage settings that change how memory is held, not what is computed: left out of the recipe hash, so runs that
# differ only in them compare as one configuration.
HASH_IGNORED_STAGE_KEYS = ("release_freed_memory",)


class TrainLoop(Strict):
    """What every stage's trainer loop shares (both stages run on `transformers.Trainer` arguments)."""

    epochs: float = Field(1.0, gt=0, le=MAX_EPOCHS_BOUND)
    max_steps: int = Field(-1, le=MAX_STEPS_BOUND, description="overrides epochs when > 0")
    learning_rate: float = Field(1e-4, gt=0, allow_inf_nan=False)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    lr_scheduler: str = Field("cosine", description="a transformers scheduler name")
    max_grad_norm: float = 1.0
    logging_steps: int = Field(10, ge=1)
    gradient_checkpointing: bool = False
    mixed_precision: Precision = Field(
        "no",
        description="autocast forward and backward in this precision, weights and optimizer stay float32; bf16 "
        "needs a GPU or a CPU with bf16 instructions (elsewhere it is emulated and slower)",
    )
    save_steps: int = Field(0, ge=0, description="also checkpoint every N steps (0: only when interrupted)")
    release_freed_memory: bool | None = Field(
        None,
        description="host memory under glibc (Linux): while training, hand every freed block of 1 MiB or more back "
        "to the system at once instead of keeping it in the heap. Default (null): on when the weights are 4-bit on "
        "CPU (strategy qlora there), off otherwise. On CPU (`mllmtune perf --only memory`, 150 M model, batch 4) it "
        "lowered the training peak of full / lora / qlora by 9 / 24 / 37% and made their steps 1.2 / 1.4 / 1.7x as "
        "long. Does not change what is computed",
    )

    @field_validator("lr_scheduler")
    @classmethod
    def _scheduler(cls, value: str) -> str:
        return _one_of(value, SCHEDULERS, "unknown scheduler")


class SFTStage(TrainLoop):
    name: Literal["sft"] = "sft"
    batching: Literal["random", "by_length", "length_buckets"] = Field(
        "random",
        description="random batches; by_length: transformers' length-grouped sampler (least padding, but on a "
        "mixed-task set each batch becomes one task, which hurt learning in the world's pretraining: loss 1.55 vs "
        "0.79 after 100 steps); length_buckets: random batches within buckets of similar length (the longest at "
        "most twice the shortest), so tasks of similar length still mix",
    )


class ReflectionSpec(Strict):
    """How the policy answers the reflective questions (sampled, no gradient). The released code samples them as
    its validation (`examples/config.yaml`, `worker.rollout.val_override_config`: temperature 0.6, top_p 0.95) up to
    the rollout's response length."""

    temperature: float = Field(0.6, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(8, ge=1)


class GRPOStage(TrainLoop):
    """GRPO on TRL's `GRPOTrainer`; `batch_size` counts completions (prompts x num_generations) per device step."""

    name: Literal["grpo"]
    template: Literal["emo-r3", "think", "plain"] = Field("emo-r3", description="answer format asked and rewarded")
    learning_rate: float = Field(2e-6, gt=0, allow_inf_nan=False)
    mixed_precision: Precision = Field("bf16", description="TRL's default for GRPO")
    num_generations: int = Field(4, ge=2, description="group size G")
    temperature: float = Field(1.0, gt=0, description="rollout sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1)
    max_completion_length: int = Field(160, ge=1)
    beta: float = Field(0.01, ge=0, description="KL coefficient")
    epsilon: float = Field(0.2, gt=0, description="lower clip ratio")
    epsilon_high: float = Field(0.3, gt=0, description="upper clip ratio")
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field(
        "dapo",
        description="TRL's loss aggregation; 'dapo' is the token-mean loss of EMO-R3's released code (EasyR1's "
        "`loss_avg_mode: token`)",
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay; 0.01 as EMO-R3's released config")
    updates_per_generation: int = Field(
        1,
        ge=1,
        description="optimizer updates per batch of rollouts (the released config: 512 prompts per rollout, 256 per "
        "update, so 2); above 1 the later updates are off-policy and the clip acts",
    )
    num_iterations: int = Field(1, ge=1, description="passes over each batch of rollouts (TRL's μ; released: 1)")
    rewards: dict[str, float] = Field(
        default_factory=lambda: _resolve_rewards(None),
        description="a preset (released, paper, accuracy-format) or weights by reward name; see mllmtune/rewards",
    )
    reflection: ReflectionSpec = Field(default_factory=ReflectionSpec)
    labels: list[str] | None = Field(None, description="candidate labels; default: each example's own label set")
    cold_start: SFTStage | None = Field(None, description="a short SFT on structured answers first (world cues)")
    use_vllm: bool = Field(False, description="generate rollouts with vLLM (TRL's option; GPU only)")
    vllm_mode: Literal["colocate", "server"] = "colocate"

    @field_validator("rewards", mode="before")
    @classmethod
    def _rewards(cls, value: Any) -> dict[str, float]:
        return _resolve_rewards(value)

    @field_validator("labels")
    @classmethod
    def _label_set(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            from mllmtune.emo_r3.template import check_label_set

            check_label_set(value)
        return value

    @model_validator(mode="after")
    def _groups(self) -> GRPOStage:
        rollout = self.batch_size * self.grad_accum * self.updates_per_generation
        if rollout % self.num_generations:
            raise ValueError(
                f"the completions of one rollout per device, batch_size x grad_accum x updates_per_generation = "
                f"{rollout}, must be a multiple of num_generations {self.num_generations} (whole groups)"
            )
        return self


def _resolve_rewards(value: Any) -> dict[str, float]:
    from mllmtune.rewards import resolve

    return resolve(value)


Stage = Annotated[Union[SFTStage, GRPOStage], Field(discriminator="name")]  # noqa: UP007


def _strategy_union():
    # Built from the registry, so a new strategy needs no edit here.
    options = tuple(s.options for s in REGISTRY.values())
    return Annotated[Union[options], Field(discriminator="name")]  # noqa: UP007


class Recipe(Strict):
    name: str = Field(min_length=1)
    description: str = Field("", max_length=4000)
    seed: int = Field(0, ge=0, le=2**32 - 1, description="0 to 2^32 - 1 (numpy's range)")
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=WorldData)
    strategy: _strategy_union()
    stage: Stage = Field(default_factory=SFTStage)
    eval: EvalSpec = Field(default_factory=EvalSpec)

    @model_validator(mode="before")
    @classmethod
    def _sft_by_default(cls, data: Any) -> Any:
        """A stage section without a name is the SFT stage (as before GRPO existed)."""
        if isinstance(data, dict) and isinstance(data.get("stage"), dict) and "name" not in data["stage"]:
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
        node[parts[-1]] = _yaml(raw, f"{where} {key.strip()}")
    return data


def _yaml(text: str, where: str):
    """`yaml.safe_load` (no tag builds a Python object), its failures as one line naming `where`."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None and "\n" in text.strip() else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{where}{line}: not valid YAML ({problem})") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to read") from None


def read_yaml(path: Path):
    """A YAML file's content (recipe, suite): any failure to read it is one line naming the file."""
    return _yaml(read_text(path), str(path))


def read_text(path: Path) -> str:
    """A text file's content: UTF-8, or the encoding its byte-order mark names (UTF-8, -16, -32); else one line."""
    import codecs

    raw = path.read_bytes()
    marks = (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    )
    encoding = next((enc for bom, enc in marks if raw.startswith(bom)), "utf-8")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None


def _variants(section: str) -> dict[str, type[BaseModel]]:
    """The tagged unions of a recipe: `strategy` and `stage` sections pick their model by `name`."""
    if section == "strategy":
        return {name: s.options for name, s in REGISTRY.items()}
    if section == "stage":
        return {"sft": SFTStage, "grpo": GRPOStage}
    if section == "data":
        return {"world": WorldData, "files": FileData}
    return {}


def _describe_error(err: dict, data: dict) -> str:
    loc = [str(x) for x in err["loc"]]
    variants = _variants(loc[0]) if loc else {}
    # Drop the discriminator tag pydantic inserts ("strategy.bitfit.rank" -> "strategy.rank").
    chosen = variants.get(loc[1]) if len(loc) >= 2 else None
    if chosen is not None:
        loc = [loc[0]] + loc[2:]
    key = ".".join(loc) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    kind = loc[0] if loc else ""
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
        if kind == "strategy" and chosen is not None and len(loc) == 2:
            name = data[loc[0]].get("name")
            msg = f"not an option of strategy {name!r} (its options: {', '.join(chosen.model_fields)})"
        else:
            allowed = _allowed_keys(loc[:-1], chosen)
            if allowed:
                msg += f" (expected one of: {', '.join(allowed)})"
    elif err["type"] == "union_tag_invalid":
        msg = (
            f"unknown {kind} {err['input'].get('name')!r}; known: {', '.join(sorted(variants))}"
            if isinstance(err.get("input"), dict)
            else msg
        )
    elif err["type"] == "union_tag_not_found":
        msg = f"missing 'name'; known {kind}s: {', '.join(sorted(variants))}"
    return f"{key}: {msg}"


def _allowed_keys(path: list[str], chosen: type[BaseModel] | None = None) -> list[str]:
    """Keys of the section at `path`; inside a tagged section (`chosen`), its chosen variant's."""
    model: type[BaseModel] = Recipe
    for i, part in enumerate(path):
        if i == 0 and chosen is not None:
            model = chosen
            continue
        field = model.model_fields.get(part)
        options = get_args(field.annotation) or (field.annotation,) if field else ()
        sections = [a for a in options if isinstance(a, type) and issubclass(a, BaseModel)]  # `X | None` -> X
        if not sections:
            return []
        model = sections[0]
    return list(model.model_fields)


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
        first = _describe_error(errors[0], data)
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise UserError(f"{source}: {first}{more}") from None


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
