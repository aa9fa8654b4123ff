"""The world's checks of reasoning replies: the world knows the truth behind each image, so it can check the steps.

Beside `mllmtune.evaluation.reasoning.answer_metrics` (accuracy read leniently, share well-formed), for replies in a
reasoning template:

- `step3_polarity`, `step3_arousal`: share whose step 3 names the true valence sign / arousal level (a missing or
  undecided step 3 counts as wrong);
- `step1_cue_precision`: of the objects and lights that step 1 names, the share the image really has (absent when
  no reply names any: a record holds numbers only).
"""

from __future__ import annotations

import json
import re

from mllmtune.emo_r3 import template as tpl
from mllmtune.evaluation.reasoning import answer_metrics
from mllmtune.world.scenes import AROUSAL_THRESHOLD, LIGHTS, OBJECTS


def _named_cues(text: str) -> set[str]:
    words = set(re.findall(r"[a-z]+", text.lower()))
    lights = {f"light:{x}" for x in LIGHTS if re.search(rf"\b{x} light\b", text.lower())}
    return {f"object:{x}" for x in OBJECTS if x in words} | lights


def _true_cues(example: dict) -> set[str]:
    cues = json.loads(example["cues"])
    return {f"object:{x}" for x in cues["objects"]} | {f"light:{cues['light']}"}


def reasoning_metrics(examples: list[dict], outputs: list[str], template: str) -> dict[str, float]:
    """`answer_metrics` and the step checks; percentages over all examples, cue precision over the cues named."""
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
