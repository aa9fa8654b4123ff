"""How reasoning replies are read: the released strict reading beside a lenient one.

Every emotion benchmark asked in a reasoning template scores `accuracy` as EMO-R3's released accuracy reward reads a
reply (the last `\\boxed{}`, lowercased, equal to the label; `template.predicted_label`): that is the number the
leaderboard uses. `answer_metrics` adds, beside it:

- `accuracy_lenient`: the boxed answer read forgivingly (`\\text{}` unwrapped, NFKC, wrapping punctuation and an
  answer preamble dropped; `template.lenient_label`), for reporting only;
- `structured`: share of replies passing the released format check.

A plug-in that knows the truth behind its items adds checks of the steps in its own benchmark's `metrics` (the
embedded world does: `mllmtune/world/reasoning.py`).
"""

from __future__ import annotations

from mllmtune.emo_r3 import template as tpl


def answer_metrics(examples: list[dict], outputs: list[str], template: str) -> dict[str, float]:
    """`accuracy_lenient` and `structured`, percentages over all examples."""
    n = max(1, len(outputs))
    pairs = list(zip(examples, outputs, strict=True))
    lenient = sum(tpl.lenient_label(out, template, ex["labels"]) == ex["answer"] for ex, out in pairs)
    structured = sum(tpl.has_format(out, template) for out in outputs)
    return {"accuracy_lenient": 100.0 * lenient / n, "structured": 100.0 * structured / n}
