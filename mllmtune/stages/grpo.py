"""The GRPO stage: TRL's `GRPOTrainer` with rewards by name, over whatever the strategy left trainable.

Rollouts answer in the stage's template; the rewards and their weights come from the recipe's `stage.rewards` (a
preset such as `released`, EMO-R3's released scoring, or weights by name; see `mllmtune.rewards`). A weight of 0
drops a term, and a dropped reflective term costs no generation. An optional cold start (the suite's own aid for the
world, whose base seldom writes the template; EMO-R3's released script has none) first runs the SFT stage on
the structured answers the data source writes (`example["reasoning"]`; the world's come from each image's cues).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mllmtune.config.fields import Strict
from mllmtune.data.chat import emotion_prompt
from mllmtune.emo_r3 import rewards
from mllmtune.emo_r3 import template as tpl
from mllmtune.errors import UserError
from mllmtune.stages import loop
from mllmtune.stages.loop import Precision, TrainLoop
from mllmtune.stages.sft import SFTStage, run_sft


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


def _labels(example: dict, stage) -> list[str]:
    labels = stage.labels or example.get("labels")
    if not labels:
        raise UserError("stage.labels: the training examples carry no label set; list the candidate labels")
    return list(labels)


# Families TRL's GRPOTrainer cannot roll out (TRL 1.16), with the reason, so a run stops before anything is scored.
UNSUPPORTED = {
    "llama4": "TRL's GRPOTrainer processes prompts without tensors and stacks Llama 4's per-image tile stacks into "
    "5-D pixel_values, which Llama 4's vision model refuses",
}


def check_family(family: str) -> None:
    if family in UNSUPPORTED:
        raise UserError(f"stage grpo: model family {family!r} cannot run GRPO yet: {UNSUPPORTED[family]}; use sft")


def check_labels(examples: list[dict], stage) -> None:
    """A candidate list must cover every label of the data (an uncovered label could never be answered right), and
    the coherence question must be able to list each example's label set."""
    from mllmtune.emo_r3.template import check_label_set

    if not stage.labels:
        for labels in {tuple(ex.get("labels") or ()) for ex in examples}:
            try:
                check_label_set(list(labels))
            except ValueError as exc:
                raise UserError(f"data.labels: {exc}") from None
        return
    missing = sorted({ex["answer"] for ex in examples} - set(stage.labels))
    if missing:
        raise UserError(f"stage.labels: misses the data set's labels {', '.join(missing)}")


def rollout_rows(examples: list[dict], stage) -> list[dict]:
    """GRPO's rows: a conversational prompt in the stage's template plus the columns the rewards read."""
    rows = []
    for ex in examples:
        labels = _labels(ex, stage)
        question = emotion_prompt(labels) if stage.labels else ex["prompt"]
        rows.append(
            {
                "prompt": [{"role": "user", "content": tpl.apply(stage.template, question)}],
                "image": ex.get("image"),
                "label": ex["answer"],
                "labels": labels,
                "template": stage.template,
            }
        )
    return rows


def rollout_dataset(rows: list[dict]):
    """A `datasets.Dataset` (what TRL accepts) holding the text columns; images stay where they are (PIL or a lazy
    file reference) and are decoded per batch, so a large image set is never copied into Arrow memory."""
    import datasets

    images = [r["image"] for r in rows]
    table = datasets.Dataset.from_list(
        [{k: v for k, v in r.items() if k != "image"} | {"row": i} for i, r in enumerate(rows)]
    )

    def with_images(batch: dict) -> dict:
        batch["image"] = [images[i].convert("RGB") if images[i] is not None else None for i in batch["row"]]
        return batch

    return table.with_transform(with_images)


def cold_start_answer(example: dict, template: str) -> str:
    """The answer the cold start trains on: the one the data source wrote in `template` (`example["reasoning"]`)."""
    if template == "plain":
        return example["answer"]
    written = example.get("reasoning") or {}
    if template not in written:
        raise UserError(
            f"stage.cold_start needs examples that carry a written answer in the {template!r} template "
            "(`reasoning`), as the world's data does; this data source has none"
        )
    return written[template]


def cold_start_examples(examples: list[dict], stage) -> list[dict]:
    return [
        {
            "prompt": tpl.apply(stage.template, emotion_prompt(_labels(ex, stage))),
            "answer": cold_start_answer(ex, stage.template),
            "image": ex.get("image"),
        }
        for ex in examples
    ]


def reward_functions(stage, ask) -> tuple[list, list[float]]:
    """The reward functions of `stage.rewards` with a weight above 0, and their weights."""
    from mllmtune.rewards import build

    return build(stage.rewards, ask)


@contextmanager
def _plain_ref_init(model):
    """TRL gives a PEFT policy a frozen "ref" copy of its adapter, created with the adapter's own config and then
    overwritten with its values. An init that rewrites the base weights (PiSSA's SVD) would then subtract the
    principal part from the base a second time and change the policy; a plain init leaves the base alone."""
    config = (getattr(model, "peft_config", None) or {}).get("default")
    init = getattr(config, "init_lora_weights", True)
    if isinstance(init, str):
        config.init_lora_weights = True
    try:
        yield
    finally:
        if isinstance(init, str):
            config.init_lora_weights = init


def _trainer_class(base):
    """TRL's trainer, passed on to the model only the processor outputs it scores with: TRL hands every output but
    the ids to `_get_per_token_logps_and_entropies`, which takes no `batch_num_images` (LLaVA-OneVision's; with one
    image per rollout the model's default) and no `labels` (PaliGemma's processor writes them; TRL sets its own)."""

    class Trainer(base):
        def _get_per_token_logps_and_entropies(self, *args, batch_num_images=None, labels=None, **kwargs):
            return super()._get_per_token_logps_and_entropies(*args, **kwargs)

    Trainer.__name__ = Trainer.__qualname__ = base.__name__
    return Trainer


def _policy_opener(trainer):
    """The live policy ready to generate, as TRL's own generation path opens it (`GRPOTrainer._generate`): unwrapped
    from DDP / DeepSpeed (ZeRO-3 parameters gathered) and, under FSDP, with the full parameters summoned."""

    @contextmanager
    def open_policy():
        from contextlib import nullcontext

        from trl.models.utils import unwrap_model_for_generation

        dist = getattr(trainer, "_dist", None)  # TRL's FSDP/DeepSpeed helper (private; absent in older versions)
        full = dist.summon_full_params(trainer.model_wrapped, recurse=False) if dist is not None else nullcontext()
        with (
            unwrap_model_for_generation(
                trainer.model_wrapped,
                trainer.accelerator,
                gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
            ) as model,
            full,
        ):
            yield model

    return open_policy


def run_grpo(
    model,
    processor,
    examples: list[dict],
    stage,
    output_dir: Path,
    seed: int,
    progress=None,
    label: str = "grpo",
    optimizer=None,
    resume_from: str | None = None,
) -> dict:
    """GRPO in place on `model` (after the cold start, when the stage has one); returns the summary for the record.

    Interruption and resumption follow the SFT stage: a checkpoint under `cold-start/` resumes the cold start,
    one under `grpo/` resumes GRPO (the cold-started weights are in it).
    """
    from trl import GRPOConfig, GRPOTrainer

    loop.check_trainable(model)
    summary: dict = {}
    in_grpo = resume_from is not None and Path(resume_from).parent.name == "grpo"
    if stage.cold_start is not None and not in_grpo:
        summary["cold_start"] = run_sft(
            model,
            processor,
            cold_start_examples(examples, stage),
            stage.cold_start,
            output_dir / "cold-start",
            seed,
            progress=progress,
            label=f"cold start {label}",
            resume_from=resume_from,
        )
        resume_from = None
    trainer_box: list = []  # the reflective rewards ask the trainer's live policy, which exists only below
    ask = rewards.policy_asker(
        lambda: _policy_opener(trainer_box[0])(),
        processor,
        stage.reflection.temperature,
        stage.reflection.top_p,
        stage.reflection.max_new_tokens,
        batch_size=stage.batch_size * stage.grad_accum,
    )
    funcs, weights = reward_functions(stage, ask)
    args = loop.training_args(
        stage,
        output_dir / "grpo",
        seed,
        progress,
        args_class=GRPOConfig,
        num_generations=stage.num_generations,
        temperature=stage.temperature,
        top_p=stage.top_p,
        max_completion_length=stage.max_completion_length,
        steps_per_generation=stage.updates_per_generation * stage.grad_accum,  # TRL counts micro-steps
        num_iterations=stage.num_iterations,
        beta=stage.beta,
        epsilon=stage.epsilon,
        epsilon_high=stage.epsilon_high,
        loss_type=stage.loss_type,
        reward_weights=weights,
        use_vllm=stage.use_vllm,
        vllm_mode=stage.vllm_mode,
        gradient_checkpointing=stage.gradient_checkpointing,  # TRL's default is on; the recipe decides
    )
    with _plain_ref_init(model):
        trainer = _trainer_class(GRPOTrainer)(
            model=model,
            reward_funcs=funcs,
            args=args,
            train_dataset=rollout_dataset(rollout_rows(examples, stage)),
            processing_class=processor,
            callbacks=loop.callbacks(progress, label),
            optimizers=(optimizer, None),
        )
    trainer_box.append(trainer)
    if stage.cold_start is not None and trainer.ref_model is not None:
        # TRL loads the reference from the model's path, i.e. the base; after a cold start the reference is the
        # cold-started policy, so that the KL term holds GRPO near where it started.
        ref = copy.deepcopy(trainer.accelerator.unwrap_model(trainer.model)).eval().requires_grad_(False)
        trainer.ref_model = trainer.accelerator.prepare_model(ref, evaluation_mode=True)
    summary |= loop.run(trainer, output_dir / "grpo", progress, resume_from, stage.release_freed_memory)
    summary["rewards"] = _reward_means(trainer.state.log_history)
    return summary


def _reward_means(history: list[dict]) -> dict[str, dict[str, float]]:
    """First and last logged mean of each reward term (and the total), for the record."""
    keys = sorted({k for h in history for k in h if k.startswith("rewards/") and k.endswith("/mean")} | {"reward"})
    out = {}
    for key in keys:
        values = [h[key] for h in history if key in h]
        if values:
            out[key.removeprefix("rewards/").removesuffix("/mean")] = {"first": values[0], "last": values[-1]}
    return out
