"""The world's training data: `data: {source: world}` and the rows it yields."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mllmtune.config.fields import Strict, one_of

SPLITS = ("test", "train")  # what mllmtune/world/build.py writes for every data set


class WorldData(Strict):
    """`data: {source: world}`: the world's EmoScenes rows of one domain."""

    source: Literal["world"] = "world"
    domain: Literal["photo", "art", "web"] = "photo"
    split: str = "train"
    limit: int | None = Field(None, ge=1, description="use only the first N examples")

    @field_validator("split")
    @classmethod
    def _split(cls, value: str) -> str:
        return one_of(value, SPLITS, "the world has no split")


def load_rows(spec: WorldData) -> list[dict]:
    """Training rows of one domain and split (`as_examples`)."""
    from mllmtune.errors import UserError
    from mllmtune.world.build import load_world_split

    rows = load_world_split(f"emoscenes-{spec.domain}", spec.split, spec.limit)
    if not rows:
        raise UserError(f"data: world split emoscenes-{spec.domain}/{spec.split} is empty")
    return as_examples(rows)


def as_examples(rows: list[dict]) -> list[dict]:
    """World rows as training examples. Metadata rides along: GRPO rebuilds prompts with its template from
    `labels`, and `reasoning` (template -> an answer written from the image's ground-truth cues) is what
    `stage.cold_start` trains on."""
    from mllmtune.data.chat import emotion_prompt

    return [
        dict(r, prompt=emotion_prompt(r["labels"]), answer=r["label"], reasoning=written_reasoning(r)) for r in rows
    ]


def written_reasoning(row: dict) -> dict[str, str]:
    """The answer in each reasoning template, written from the row's description and latent emotion."""
    from mllmtune.world.general import structured_answer
    from mllmtune.world.scenes import feeling, polarity_arousal

    label, latent = row["label"], row["latent"]
    thought = f"{row['description']} {feeling(latent)}. {polarity_arousal(latent)}"
    return {
        "emo-r3": structured_answer(row["description"], feeling(latent), polarity_arousal(latent), label),
        "think": f"<think> {thought} </think> \\boxed{{{label}}}",
    }
