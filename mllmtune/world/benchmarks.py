"""The world's benchmarks: EmoScenes in three domains (targets) and two general-knowledge sets (retention).

Registered by the world plug-in (`mllmtune/world/plugin.py`); the core scores them by name like any other set.
"""

from __future__ import annotations

from dataclasses import dataclass

from mllmtune.data.chat import emotion_prompt
from mllmtune.evaluation.benchmarks import Benchmark


@dataclass(frozen=True)
class WorldBenchmark(Benchmark):
    domain: str | None = None
    subsets: tuple[str, ...] = ()  # general benchmarks: the parts of the world's general test split they hold

    def examples(self, limit: int | None = None, template: str = "plain") -> list[dict]:
        """The benchmark's items with stable ids (`world-split/index`); `limit` is a seeded sample stratified by
        label (emotions) or task."""
        from mllmtune.emo_r3.template import apply
        from mllmtune.evaluation.sampling import stratified_sample
        from mllmtune.world.build import load_world_split

        if self.kind == "emotion":
            split = f"emoscenes-{self.domain}"
            rows = [
                dict(r, prompt=apply(template, emotion_prompt(r["labels"])), answer=r["label"], template=template)
                for r in load_world_split(split, "test")
            ]
            for i, r in enumerate(rows):
                r["id"] = f"{split}/test/{i}"
            return stratified_sample(rows, limit, [r["id"] for r in rows], stratum=lambda r: r["answer"])
        rows = [dict(r, prompt=r["question"], id=f"general/test/{i}") for i, r in enumerate(world_general_rows())]
        rows = [r for r in rows if r["subset"] in self.subsets]
        return stratified_sample(rows, limit, [r["id"] for r in rows], stratum=lambda r: r["subset"])

    def metrics(self, examples: list[dict], preds: list, correct: list, outputs: list[str] | None = None) -> dict:
        """The shared metrics and, for replies in a reasoning template, the checks of their steps against the
        truth each image was drawn from (`mllmtune/world/reasoning.py`)."""
        out = super().metrics(examples, preds, correct, outputs)
        template = examples[0].get("template", "plain") if examples else "plain"
        if self.kind == "emotion" and template != "plain" and outputs is not None:
            from mllmtune.world.reasoning import reasoning_metrics

            out |= reasoning_metrics(examples, outputs, template)
        return out


def world_general_rows() -> list[dict]:
    """The world's general test split, each row tagged with its `subset`: its task, with caption matching split
    into `caption-shape` (shape images) and `caption-scene` (EmoScenes, the target domain)."""
    from mllmtune.world.build import load_world_split
    from mllmtune.world.general import caption_subset

    rows, captions = load_world_split("general", "test"), 0
    for r in rows:
        r["subset"] = r["task"]
        if r["task"] == "caption":
            r["subset"] = f"caption-{caption_subset(captions)}"
            captions += 1
    return rows


BENCHMARKS: tuple[WorldBenchmark, ...] = (
    WorldBenchmark(
        "emoscenes-photo",
        1,
        "target",
        "emotion",
        "EmoScenes photo domain, 8 Mikels emotions (in-domain)",
        domain="photo",
    ),
    WorldBenchmark(
        "emoscenes-art",
        1,
        "target",
        "emotion",
        "EmoScenes art renderer, 6 Emotion6 labels (OOD)",
        domain="art",
    ),
    WorldBenchmark(
        "emoscenes-web",
        1,
        "target",
        "emotion",
        "EmoScenes noisy web images, 4 coarse labels (OOD)",
        domain="web",
    ),
    WorldBenchmark(
        "world-general",
        2,
        "retention",
        "general",
        "shape VQA, caption matching on shape images, digits (no target-domain items)",
        max_new_tokens=10,
        subsets=("vqa", "caption-shape", "digits"),
    ),
    WorldBenchmark(
        "world-emotion-knowledge",
        1,
        "retention",
        "general",
        "emotion knowledge in text and caption matching on EmoScenes: the target domain, reported beside F",
        max_new_tokens=10,
        subsets=("emotion_text", "caption-scene"),
    ),
)
