"""Benchmarks: declared data with a version that is bumped on any change of meaning.

A benchmark yields examples (`prompt`, `answer`, `image`, metadata) and scores the model's generated text for
them. Scores are computed from model outputs only; labels are used to check them, never to produce them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mllmtune.data.chat import emotion_prompt


@dataclass(frozen=True)
class Benchmark:
    name: str
    version: int
    role: Literal["target", "retention"]
    kind: Literal["emotion", "general"]
    description: str
    domain: str | None = None
    max_new_tokens: int = 8
    higher_is_better: tuple[tuple[str, bool], ...] = (("accuracy", True), ("macro_f1", True), ("answer_nll", False))
    subsets: tuple[str, ...] = ()  # general benchmarks: the parts of the world's general test split they hold

    @property
    def key(self) -> str:
        return self.key_for("plain")

    def key_for(self, template: str) -> str:
        """`name@version`; an emotion benchmark asked in a reasoning template is its own column,
        `name/template-rN@version` (N: the template's revision), so it pairs only with a baseline asked and read the
        same way.

        >>> BENCHMARKS["emoscenes-photo"].key_for("emo-r3")
        'emoscenes-photo/emo-r3-r2@1'
        """
        from mllmtune.emo_r3.template import REVISION

        if template == "plain" or self.kind != "emotion":
            return f"{self.name}@{self.version}"
        return f"{self.name}/{template}-r{REVISION[template]}@{self.version}"

    def new_tokens(self, template: str) -> int:
        from mllmtune.emo_r3.template import MAX_NEW_TOKENS

        return MAX_NEW_TOKENS[template] if self.kind == "emotion" and template != "plain" else self.max_new_tokens

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

    def score_one(self, example: dict, output: str) -> tuple[str | None, bool]:
        """(parsed prediction, correct) for one generated output."""
        from mllmtune.evaluation.parse import exact_match, match_label, parse_yes_no

        if self.kind == "emotion":
            from mllmtune.emo_r3.template import predicted_label

            pred = predicted_label(output, example.get("template", "plain"), example["labels"])
        elif example["answer"] in ("yes", "no"):
            pred = parse_yes_no(output)
        elif example.get("choices"):
            pred = match_label(output, example["choices"])
        else:
            pred = output.strip()
            return pred, exact_match(pred, example["answer"])
        return pred, pred is not None and pred.lower() == example["answer"].lower()

    def metrics(
        self, examples: list[dict], preds: list[str | None], correct: list[bool], outputs: list[str] | None = None
    ) -> dict[str, float]:
        from sklearn.metrics import f1_score

        out = {"accuracy": 100.0 * sum(correct) / max(1, len(correct)), "n": float(len(correct))}
        if self.kind == "emotion":
            labels = sorted({ex["answer"] for ex in examples})
            y_pred = [p if p is not None else "<none>" for p in preds]
            out["macro_f1"] = 100.0 * f1_score(
                [ex["answer"] for ex in examples], y_pred, labels=labels, average="macro", zero_division=0
            )
        else:
            for part in sorted({ex["subset"] for ex in examples}):
                hits = [c for ex, c in zip(examples, correct, strict=True) if ex["subset"] == part]
                out[f"accuracy/{part}"] = 100.0 * sum(hits) / len(hits)
        out["parsed"] = 100.0 * sum(p is not None for p in preds) / max(1, len(preds))
        template = examples[0].get("template", "plain") if examples else "plain"
        if self.kind == "emotion" and template != "plain" and outputs is not None:
            from mllmtune.evaluation.reasoning import reasoning_metrics

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


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark(
            "emoscenes-photo",
            1,
            "target",
            "emotion",
            "EmoScenes photo domain, 8 Mikels emotions (in-domain)",
            domain="photo",
        ),
        Benchmark(
            "emoscenes-art",
            1,
            "target",
            "emotion",
            "EmoScenes art renderer, 6 Emotion6 labels (OOD)",
            domain="art",
        ),
        Benchmark(
            "emoscenes-web",
            1,
            "target",
            "emotion",
            "EmoScenes noisy web images, 4 coarse labels (OOD)",
            domain="web",
        ),
        Benchmark(
            "world-general",
            2,
            "retention",
            "general",
            "shape VQA, caption matching on shape images, digits (no target-domain items)",
            max_new_tokens=10,
            subsets=("vqa", "caption-shape", "digits"),
        ),
        Benchmark(
            "world-emotion-knowledge",
            1,
            "retention",
            "general",
            "emotion knowledge in text and caption matching on EmoScenes: the target domain, reported beside F",
            max_new_tokens=10,
            subsets=("emotion_text", "caption-scene"),
        ),
    ]
}
