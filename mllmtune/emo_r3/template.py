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

# EMO-R3's Structured Emotional Thinking instruction, verbatim from the released prompt
# (SeerRay-Lab/emo-r3 `examples/format_prompt/emor3.jinja`, rendered after the question as `apply` does).
STRUCTURED_INSTRUCTION = (
    "You First think the emotional meaning step by step, and then provide the final answer.\n\n"
    "The reasoning process MUST follow the structure below:\n"
    "<step1>Identify what in the scene could trigger emotion (action, face, environment).</step1>\n"
    "<step2>Describe how a human would feel about it.</step2>\n"
    "<step3>Conclude if the emotion is positive or negative, and if it's high or low arousal.</step3>\n\n"
    "The final answer MUST BE put in \\boxed{}."
)
# The suite's own `<think>` instruction (no released source claimed).
THINK_INSTRUCTION = (
    "First think about the question in <think> </think> tags, then give the final answer. The final answer MUST be "
    "put in \\boxed{}."
)
# The Reflective Emotional Reward's two questions, verbatim from SeerRay-Lab/emo-r3 `verl/trainer/ray_trainer.py`
# (`fit`, `rethink_prompt_template` and `rethink_prompt_template_image`). The released coherence question lists the
# Mikels-8 labels; here it lists the training data's own label set. The consistency question follows the image: the
# released prompt is "<image>\nCan …", split at "<image>" by its data loader (`verl/utils/dataset.py`,
# `_build_messages`), so the text after the image starts with a newline; it has no space before "Please" and none
# before the reasoning.
COHERENCE_QUESTION = (
    "{text}\nWhich emotion best describes the text above?\n"
    "Answer the question using one emotional category (one word only): {labels}."
)
CONSISTENCY_QUESTION = "\nCan the following text describe the image?Please answer with yes or no.{text}"
# What the released code asks instead when a reply holds no reasoning to re-read (`_rethink_batch`): "Answer 'None'"
# alone for coherence, "<image>\nAnswer 'None'" (the image, then the text) for consistency.
NONE_QUESTION = "Answer 'None'"
NONE_IMAGE_QUESTION = "\nAnswer 'None'"
# A template's revision, bumped when what it asks or how a reply is read changes meaning; it is part of a benchmark's
# key (`Benchmark.key_for`), so scores under an earlier reading never share a column with today's. 2: the released
# instruction and the released strict reading (format check, last-box accuracy).
REVISION: dict[str, int] = {"plain": 1, "emo-r3": 2, "think": 2}
INSTRUCTIONS: dict[str, str] = {"plain": "", "emo-r3": STRUCTURED_INSTRUCTION, "think": THINK_INSTRUCTION}
# Evaluation budget per template: a structured answer runs to about 80 tokens of the world's tokenizer.
MAX_NEW_TOKENS: dict[str, int] = {"plain": 8, "emo-r3": 160, "think": 160}

_STEP = {i: re.compile(rf"<step{i}>(.*?)</step{i}>", re.S) for i in (1, 2, 3)}
# The released format check and its whitespace normalisation (`examples/reward_function/emor3.py`); the `<think>` form
# is EasyR1's (hiyouga/EasyR1 `examples/reward_function/math.py`, the code EMO-R3 builds on).
_TAG_SPACE = re.compile(r"\s*(<|>|/)\s*")
_FORMAT = {
    "emo-r3": re.compile(r"<step1>.*</step1>.*<step2>.*</step2>.*<step3>.*</step3>.*\\boxed\{.*\}.*", re.S),
    "think": re.compile(r"<think>.*</think>.*\\boxed\{.*\}.*", re.S),
}
# The spans the reflective questions re-read, from the raw reply (`ray_trainer.py`: `extract_steps`,
# `extract_step1_to_step2`).
_STEPS_1_2 = re.compile(r"(<step1>.*?</step2>)", re.S)
_STEP1_TO_STEP2 = re.compile(r"(<step1>.*?)(?=<step2>)", re.S)


def apply(template: str, question: str) -> str:
    """The user prompt for `question` under `template`: the question trimmed, a blank line, the instruction (the
    released jinja's layout).

    >>> apply("plain", "Which emotion?")
    'Which emotion?'
    >>> apply("think", " Which emotion? ").startswith("Which emotion?\\n\\nFirst think")
    True
    >>> apply("think", apply("think", "Which emotion?")) == apply("think", "Which emotion?")
    True
    """
    instruction = INSTRUCTIONS[template]
    if not instruction or instruction in question:  # data sets such as EMO-R3's carry the instruction already
        return question
    return f"{question.strip()}\n\n{instruction}"


def check_label_set(labels: list[str]) -> None:
    """Raise ValueError when the coherence question cannot name `labels`: none at all, or a label with a comma (the
    question lists them comma-separated)."""
    if not labels:
        raise ValueError("empty: the coherence question needs the candidate labels")
    for label in labels:
        if "," in label or not label.strip():
            raise ValueError(f"{label!r} holds a comma or is blank; the coherence question lists labels with commas")


def coherence_question(text: str, labels: list[str]) -> str:
    """
    >>> coherence_question("<step1> a </step1> <step2> b </step2>", ["fear", "joy"]).splitlines()[-1]
    'Answer the question using one emotional category (one word only): fear, joy.'
    """
    return COHERENCE_QUESTION.format(text=text, labels=", ".join(labels))


def normalize_tags(text: str) -> str:
    """The released reward's first step: no whitespace around `<`, `>` or `/`.

    >>> normalize_tags("< step1 > a < /step1 > \\\\boxed{ x / y }")
    '<step1>a</step1>\\\\boxed{ x/y }'
    """
    return _TAG_SPACE.sub(r"\1", text)


def boxed_answer(text: str) -> str:
    """The last `\\boxed{}`'s content, brace-balanced and stripped, "None" when there is none: mathruler's
    `extract_boxed_content`, which the released accuracy reward calls.

    >>> boxed_answer("\\\\boxed{joy} then \\\\boxed{ \\\\text{fear} }")
    '\\\\text{fear}'
    >>> boxed_answer("fear")
    'None'
    """
    from mathruler.grader import extract_boxed_content

    return extract_boxed_content(text)


def step(text: str, i: int) -> str | None:
    """Text of `<step{i}>` (1, 2 or 3), stripped; None when the block is missing.

    >>> step("<step1> a frown. dark light. </step1>", 1)
    'a frown. dark light.'
    """
    m = _STEP[i].search(text)
    return m.group(1).strip() if m else None


def predicted_label(text: str, template: str, labels: list[str]) -> str | None:
    """The label a reply commits to, as the released accuracy reads it: for reasoning templates, the label equal
    (lowercased) to the last `\\boxed{}` content after `normalize_tags`; for plain answers, the named label.

    >>> predicted_label("<step3> negative </step3> \\\\boxed{ Fear }", "emo-r3", ["fear", "joy"])
    'fear'
    >>> predicted_label("\\\\boxed{\\\\text{fear}}", "emo-r3", ["fear", "joy"]) is None
    True
    >>> predicted_label("I think joy.", "plain", ["fear", "joy"])
    'joy'
    """
    if template == "plain":
        return match_label(text, labels)
    answer = boxed_answer(normalize_tags(text)).lower()
    return next((lab for lab in labels if lab.lower() == answer), None)


def lenient_label(text: str, template: str, labels: list[str]) -> str | None:
    """A forgiving reading for reporting beside the released one: the boxed text unwrapped (`\\text{}`), NFKC,
    without wrapping punctuation or an answer preamble.

    >>> lenient_label("\\\\boxed{\\\\text{Fear}}", "emo-r3", ["fear", "joy"])
    'fear'
    """
    if template == "plain":
        return match_label(text, labels)
    span = answer_span(text) if "\\boxed{" in text else None
    return next((lab for lab in labels if span is not None and normalize(span) == lab.lower()), None)


def has_format(text: str, template: str) -> bool:
    """The released format check: after `normalize_tags`, the three step blocks in order, then `\\boxed{}`, any text
    between and after (`emo-r3`); `<think>` then `\\boxed{}` (`think`); any non-empty reply (`plain`).

    >>> has_format("<step1> a </step1> <step2> b </step2> <step3> c </step3> \\\\boxed{fear}.", "emo-r3")
    True
    >>> has_format("<step1> a </step1> <step3> c </step3> \\\\boxed{fear}", "emo-r3")
    False
    >>> has_format("<think> dark and spiky </think> \\\\boxed{fear}", "think")
    True
    """
    if template in _FORMAT:
        return _FORMAT[template].fullmatch(normalize_tags(text)) is not None
    return bool(text.strip())


def coherence_span(text: str) -> str:
    """What the coherence question re-reads: `<step1>` through `</step2>`, tags included, stripped; "" when absent.

    >>> coherence_span("<step1> a </step1> so <step2> b </step2> <step3> c </step3>")
    '<step1> a </step1> so <step2> b </step2>'
    """
    m = _STEPS_1_2.search(text)
    return m.group(1).strip() if m else ""


def consistency_span(text: str) -> str:
    """What the consistency question re-reads: from `<step1>` up to `<step2>`, stripped; "" when either is absent.

    >>> consistency_span("<step1> a sun </step1> then <step2> b </step2>")
    '<step1> a sun </step1> then'
    """
    m = _STEP1_TO_STEP2.search(text)
    return m.group(1).strip() if m else ""


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
