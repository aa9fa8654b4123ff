"""How reasoning replies are read: the released strict reading beside a lenient one, and, where the world knows the
truth behind each image, the quality of the steps.

Every emotion benchmark asked in a reasoning template scores `accuracy` as EMO-R3's released accuracy reward reads a
reply (the last `\\boxed{}`, lowercased, equal to the label; `template.predicted_label`): that is the number the
leaderboard uses. `answer_metrics` adds, beside it:

- `accuracy_lenient`: the boxed answer read forgivingly (`\\text{}` unwrapped, NFKC, wrapping punctuation and an
  answer preamble dropped; `template.lenient_label`), for reporting only;
- `structured`: share of replies passing the released format check.

On the world, `reasoning_metrics` adds:

- `step3_polarity`, `step3_arousal`: share whose step 3 names the true valence sign / arousal level (a missing or
  undecided step 3 counts as wrong);
- `step1_cue_precision`: of the objects and lights that step 1 names, the share the image really has (absent when
  no reply names any: a record holds numbers only).
"""

from __future__ import annotations

import json
import re

from mllmtune.emo_r3 import template as tpl


def _named_cues(text: str) -> set[str]:
    from mllmtune.world.scenes import LIGHTS, OBJECTS

    words = set(re.findall(r"[a-z]+", text.lower()))
    lights = {f"light:{x}" for x in LIGHTS if re.search(rf"\b{x} light\b", text.lower())}
    return {f"object:{x}" for x in OBJECTS if x in words} | lights


def _true_cues(example: dict) -> set[str]:
    cues = json.loads(example["cues"])
    return {f"object:{x}" for x in cues["objects"]} | {f"light:{cues['light']}"}


def answer_metrics(examples: list[dict], outputs: list[str], template: str) -> dict[str, float]:
    """`accuracy_lenient` and `structured`, percentages over all examples."""
    n = max(1, len(outputs))
    pairs = list(zip(examples, outputs, strict=True))
    lenient = sum(tpl.lenient_label(out, template, ex["labels"]) == ex["answer"] for ex, out in pairs)
    structured = sum(tpl.has_format(out, template) for out in outputs)
    return {"accuracy_lenient": 100.0 * lenient / n, "structured": 100.0 * structured / n}


def reasoning_metrics(examples: list[dict], outputs: list[str], template: str) -> dict[str, float]:
    """`answer_metrics` and the step checks; percentages over all examples, cue precision over the cues named."""
    from mllmtune.world.scenes import AROUSAL_THRESHOLD

    n = max(1, len(outputs))
    polarity_ok = arousal_ok = named = real = 0
    for ex, out in zip(examples, outputs, strict=True):
        step3 = tpl.step(out, 3)
        if step3 is not None and "valence" in ex:
            said = tpl.polarity(step3)
            polarity_ok += said.positive is not None and said.positive == (ex["valence"] >= 0)
            arousal_ok += said.high is not None and said.high == (ex["arousal"] >= AROUSAL_THRESHOLD)
        step1 = tpl.step(out, 1)
        if step1 and "cues" in ex:
            cues = _named_cues(step1)
            named += len(cues)
            real += len(cues & _true_cues(ex))
    out = answer_metrics(examples, outputs, template) | {
        "step3_polarity": 100.0 * polarity_ok / n,
        "step3_arousal": 100.0 * arousal_ok / n,
    }
    if named:
        out["step1_cue_precision"] = 100.0 * real / named
    return out
