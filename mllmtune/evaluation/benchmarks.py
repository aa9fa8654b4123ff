"""Benchmarks: scored data sets, named once, with a version that is bumped on any change of meaning.

A benchmark yields examples (`prompt`, `answer`, `image`, metadata) and scores the model's generated text for
them. Scores are computed from model outputs only; labels are used to check them, never to produce them.

`BENCHMARKS` maps each name to its benchmark. Three kinds fill it: plug-ins register theirs when loaded (the
embedded world's five, `mllmtune/world/benchmarks.py`); a run registers the data sets its recipe declares
(`declared.py`, one YAML file per set or inline) and the lmms-eval tasks it names (`lmms_tasks.py`) when it starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


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

    @property
    def key(self) -> str:
        return self.key_for("plain")

    def key_for(self, template: str) -> str:
        """`name@version`; an emotion benchmark asked in a reasoning template is its own column,
        `name/template-rN@version` (N: the template's revision), so it pairs only with a baseline asked and read the
        same way.

        >>> Benchmark("emoset", 1, "target", "emotion", "EmoSet test").key_for("emo-r3")
        'emoset/emo-r3-r2@1'
        """
        from mllmtune.emo_r3.template import REVISION

        if template == "plain" or self.kind != "emotion":
            return f"{self.name}@{self.version}"
        return f"{self.name}/{template}-r{REVISION[template]}@{self.version}"

    def new_tokens(self, template: str) -> int:
        from mllmtune.emo_r3.template import MAX_NEW_TOKENS

        return MAX_NEW_TOKENS[template] if self.kind == "emotion" and template != "plain" else self.max_new_tokens

    def examples(self, limit: int | None = None, template: str = "plain") -> list[dict]:
        """The items to score (`prompt`, `answer`, `image`, `id`, and `labels` for emotion sets, `subset` where a set
        reports parts); `limit`: a seeded sample. Each kind of benchmark reads its own data."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to read its items")

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
            for part in sorted({ex["subset"] for ex in examples if "subset" in ex}):
                hits = [c for ex, c in zip(examples, correct, strict=True) if ex["subset"] == part]
                out[f"accuracy/{part}"] = 100.0 * sum(hits) / len(hits)
        out["parsed"] = 100.0 * sum(p is not None for p in preds) / max(1, len(preds))
        template = examples[0].get("template", "plain") if examples else "plain"
        if self.kind == "emotion" and template != "plain" and outputs is not None:
            from mllmtune.evaluation.reasoning import answer_metrics

            out |= answer_metrics(examples, outputs, template)
        return out


BENCHMARKS: dict[str, Benchmark] = {}


def register(bench: Benchmark) -> Benchmark:
    """Add a plug-in's benchmark under its name; one name is one meaning, so a second, different one is refused."""
    known = BENCHMARKS.get(bench.name)
    if known is not None and known != bench:
        raise ValueError(f"benchmark {bench.name!r} is registered twice with different meanings")
    BENCHMARKS[bench.name] = bench
    return bench
