"""Answer templates and their parsers: EMO-R3's Structured Emotional Thinking, the `<think>` baseline, plain labels.

A template decides two things: the instruction appended to the question, and how a reply is read back (the final
answer, and whether the reply has the required shape). Training rewards, evaluation and the reflective reward all
read replies through these functions, so a template is defined in exactly one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mllmtune.evaluation.parse import answer_span, match_label, normalize

TemplateName = Literal["plain", "emo-r3", "think"]

STRUCTURED_INSTRUCTION = (
    "First think the emotional meaning step by step, then give the final answer. The reasoning MUST follow this "
    "structure: <step1> what in the scene could trigger emotion (action, face, environment) </step1> <step2> how a "
    "person would feel about it </step2> <step3> whether the emotion is positive or negative, high or low arousal "
    "</step3>. The final answer MUST be put in \\boxed{}."
)
THINK_INSTRUCTION = (
    "First think about the question in <think> </think> tags, then give the final answer. The final answer MUST be "
    "put in \\boxed{}."
)
# The two questions the policy answers about its own reasoning (Reflective Emotional Reward). The world's base
# model learns both forms in pretraining, as a real MLLM knows them from instruction tuning.
CONSISTENCY_QUESTION = "Can the following text describe the image? Please answer with yes or no.\n{text}"
COHERENCE_QUESTION = (
    "{text}\nWhich emotion best describes the text above? "
    "Answer using one emotional category (one word only): {labels}"
)
INSTRUCTIONS: dict[str, str] = {"plain": "", "emo-r3": STRUCTURED_INSTRUCTION, "think": THINK_INSTRUCTION}
# Evaluation budget per template: a structured answer runs to about 80 tokens of the world's tokenizer.
MAX_NEW_TOKENS: dict[str, int] = {"plain": 8, "emo-r3": 160, "think": 160}

_STEP = {i: re.compile(rf"<step{i}>(.*?)</step{i}>", re.S) for i in (1, 2, 3)}
_STRUCTURED = re.compile(
    r"^\s*<step1>.*?</step1>\s*<step2>.*?</step2>\s*<step3>.*?</step3>\s*\\boxed\{[^{}]+\}\s*$", re.S
)
_THINK = re.compile(r"^\s*<think>.*?</think>\s*\\boxed\{[^{}]+\}\s*$", re.S)
_THINK_BODY = re.compile(r"<think>(.*?)</think>", re.S)


def apply(template: str, question: str) -> str:
    """The user prompt for `question` under `template`.

    >>> apply("plain", "Which emotion?")
    'Which emotion?'
    >>> apply("think", "Which emotion?").startswith("Which emotion?\\nFirst think")
    True
    >>> apply("think", apply("think", "Which emotion?")) == apply("think", "Which emotion?")
    True
    """
    instruction = INSTRUCTIONS[template]
    if not instruction or instruction in question:  # data sets such as EMO-R3's carry the instruction already
        return question
    return f"{question}\n{instruction}"


def coherence_question(text: str, labels: list[str]) -> str:
    return COHERENCE_QUESTION.format(text=text, labels=", ".join(labels))


def step(text: str, i: int) -> str | None:
    """Text of `<step{i}>` (1, 2 or 3), stripped; None when the block is missing.

    >>> step("<step1> a frown. dark light. </step1>", 1)
    'a frown. dark light.'
    """
    m = _STEP[i].search(text)
    return m.group(1).strip() if m else None


def predicted_label(text: str, template: str, labels: list[str]) -> str | None:
    """The label a reply commits to: the boxed text for reasoning templates (exact, case-insensitive, as the paper
    scores it), the named label for plain answers.

    >>> predicted_label("<step3> negative </step3> \\\\boxed{ Fear }", "emo-r3", ["fear", "joy"])
    'fear'
    >>> predicted_label("fear", "emo-r3", ["fear", "joy"]) is None
    True
    >>> predicted_label("I think joy.", "plain", ["fear", "joy"])
    'joy'
    """
    if template == "plain":
        return match_label(text, labels)
    span = answer_span(text) if "\\boxed{" in text else None
    return next((lab for lab in labels if span is not None and normalize(span) == lab.lower()), None)


def has_format(text: str, template: str) -> bool:
    """Whether a reply has the template's shape: the three step blocks in order then `\\boxed{}` for `emo-r3`,
    `<think>` then `\\boxed{}` for `think`; any non-empty reply for `plain`.

    >>> has_format("<step1> a </step1> <step2> b </step2> <step3> c </step3> \\\\boxed{fear}", "emo-r3")
    True
    >>> has_format("<step1> a </step1> <step3> c </step3> \\\\boxed{fear}", "emo-r3")
    False
    >>> has_format("<think> dark and spiky </think> \\\\boxed{fear}", "think")
    True
    """
    if template == "emo-r3":
        return bool(_STRUCTURED.match(text))
    if template == "think":
        return bool(_THINK.match(text))
    return bool(text.strip())


def reasoning(text: str) -> str | None:
    """The reasoning a reflective check re-reads: steps 1 and 2, else the `<think>` body; None when there is none."""
    parts = [s for s in (step(text, 1), step(text, 2)) if s]
    if parts:
        return " ".join(parts)
    m = _THINK_BODY.search(text)
    return m.group(1).strip() or None if m else None


@dataclass(frozen=True)
class Polarity:
    """Step 3 read back: valence sign and arousal level, each None when the text does not commit to one."""

    positive: bool | None
    high: bool | None


def polarity(text: str) -> Polarity:
    """Read valence and arousal from a step-3 text.

    >>> polarity("the emotion is negative with high arousal")
    Polarity(positive=False, high=True)
    >>> polarity("hard to say")
    Polarity(positive=None, high=None)
    """
    t = text.lower()
    pos, neg = "positive" in t, "negative" in t
    hi, lo = "high" in t, "low" in t
    return Polarity(pos if pos != neg else None, hi if hi != lo else None)
