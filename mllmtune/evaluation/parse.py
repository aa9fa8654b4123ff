"""Turn free-form model output into answers a benchmark can score.

Pure string code (no torch) so scoring is cheap, testable and identical across strategies. Every function is linear
in the length of the text: a model that rambles for 100k characters must not stall the evaluation.

Where the answer is looked for (:func:`answer_span`): the last ``\\boxed{...}``, else the last
``<answer>...</answer>``, else the text after the last ``</think>``, else the whole text.
"""

from __future__ import annotations

import re
import string
import unicodedata
from functools import lru_cache

_WS = re.compile(r"\s+")
# Punctuation, quotes and markdown emphasis that wrap an answer but are never part of it.
_EDGE = " .,;:!?\"'`()[]{}*_“”‘’«»„‚「」『』《》。，、；：！？（）【】"
_PREFIX = re.compile(r"^(?:so\s*,?\s*)?(?:the\s+|my\s+)?(?:final\s+|correct\s+|best\s+)?answer\s*(?:is\s*:?|:|-)\s*")
_BOXED = re.compile(r"\\boxed\s*\{")
_BRACE = re.compile(r"\\.|[{}]", re.S)
_TEX_WRAPPER = re.compile(r"^\\(?:text|textbf|textit|mathrm|mathbf|mbox)\s*\{")
_NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_YES_NO = re.compile(r"(?<!\w)(yes|no)(?!\w)")
_LETTER_LEAD = re.compile(r"([a-z])[).:](?:\s|$)")
_LETTER_PAREN = re.compile(r"\(([A-Za-z])\)")
# These run on whitespace-collapsed text: no \s* runs, so no backtracking over long blanks.
_LETTER_OPTION = re.compile(r"(?i:option|choice) ?:? ?\(?([A-Za-z])\)?(?!\w)")
_LETTER_ANSWER = re.compile(r"(?i:answer)(?: (?i:is))? ?:? ?\(?([A-Z])\)?(?!\w)")  # 'answer is a dog' is no letter
_LETTER_BARE = re.compile(r"(?<![\w(])([A-Z])(?!\w)")
_LOWER_WORD_AHEAD = re.compile(r" [a-z]")


def normalize(text: str | None) -> str:
    """Canonical form for comparing answers: NFKC, lowercase, one space, no wrapping punctuation or answer preamble.

    >>> normalize('  **The answer is:**  "Yes."  ')
    'yes'
    >>> normalize("Answer: (B)")
    'b'
    """
    if not text:
        return ""
    out = _WS.sub(" ", unicodedata.normalize("NFKC", text).lower())
    for _ in range(4):  # preamble and wrappers can nest: '**Answer:** "B"'
        previous = out
        out = _PREFIX.sub("", out.strip(_EDGE), count=1)
        if out == previous:
            break
    return out.strip(_EDGE)


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the brace closing the group opened just before ``start``; None if it never closes."""
    depth = 1
    for match in _BRACE.finditer(text, start):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return match.start()
    return None


def extract_boxed(text: str | None) -> str | None:
    """Content of the last ``\\boxed{...}``, nested braces kept; None if there is none or it never closes.

    >>> extract_boxed(r"so \\boxed{1} or rather \\boxed{\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    >>> extract_boxed(r"\\boxed{unclosed") is None
    True
    """
    if not text:
        return None
    last = None
    for match in _BOXED.finditer(text):
        last = match
    if last is None:
        return None
    end = _closing_brace(text, last.end())
    return None if end is None else text[last.end() : end].strip()


def _unwrap_tex(text: str) -> str:
    r"""'\text{sad}' -> 'sad', but only when the wrapper spans the whole answer."""
    for _ in range(4):
        match = _TEX_WRAPPER.match(text)
        if not match or _closing_brace(text, match.end()) != len(text) - 1:
            break
        text = text[match.end() : -1].strip()
    return text


def answer_span(text: str | None) -> str:
    """The part of an output that holds the answer, so reasoning before it cannot be mistaken for it.

    >>> answer_span(r"<think>maybe happy</think> it is \\boxed{\\text{sad}}")
    'sad'
    >>> answer_span("<think>maybe happy</think><answer>sad</answer>")
    'sad'
    """
    if not text:
        return ""
    boxed = extract_boxed(text)
    if boxed is not None:
        return _unwrap_tex(boxed)
    lower = text.lower()
    start = lower.rfind("<answer>")
    if start >= 0:
        end = lower.find("</answer>", start)
        return text[start + len("<answer>") : end if end >= 0 else len(text)].strip()
    think_end = lower.rfind("</think>")
    if think_end >= 0:
        return text[think_end + len("</think>") :].strip()
    return text


@lru_cache(maxsize=256)
def _alternation(keys: tuple[str, ...]) -> re.Pattern[str]:
    """One whole-word regex over all keys, longest first so 'very happy' beats 'happy' at the same position."""
    alternatives = "|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


def _find_earliest(answer: str, by_key: dict[str, str]) -> str | None:
    if not by_key:
        return None
    match = _alternation(tuple(by_key)).search(answer)
    return by_key[match.group()] if match else None


def _keyed(options: list[str]) -> dict[str, str]:
    """Normalized option -> original option (first wins), dropping options that normalize to nothing."""
    by_key: dict[str, str] = {}
    for option in options:
        key = normalize(option)
        if key and key not in by_key:
            by_key[key] = option
    return by_key


def match_label(text: str | None, labels: list[str]) -> str | None:
    """The label a free-form answer names: an exact match first, else the label appearing earliest as a whole word.

    >>> match_label("The answer is: Sad.", ["happy", "sad"])
    'sad'
    >>> match_label("I'd say sadness, maybe sad", ["sad", "sadness"])
    'sadness'
    >>> match_label("no idea", ["happy", "sad"]) is None
    True
    """
    if not text or not labels:
        return None
    answer = normalize(answer_span(text))
    by_key = _keyed(labels)
    if not answer:
        return None
    if answer in by_key:
        return by_key[answer]
    return _find_earliest(answer, by_key)


def parse_yes_no(text: str | None) -> str | None:
    """'yes' or 'no' by the first whole word of either in the answer; None if neither appears.

    >>> parse_yes_no("No, there is no dog.")
    'no'
    >>> parse_yes_no("I do not know") is None
    True
    """
    match = _YES_NO.search(normalize(answer_span(text)))
    return match.group(1) if match else None


def _canonical(text: str | None, drop_articles: bool = False) -> str:
    words = [_NUMBER_WORDS.get(word, word) for word in normalize(text).split(" ")]
    if drop_articles:
        words = [word for word in words if word not in _ARTICLES]
    return " ".join(word for word in words if word)


def exact_match(pred: str | None, answer: str | None) -> bool:
    """Equality after normalization, with number words 0-10 equal to their numerals; empty never matches.

    >>> exact_match("Two.", "2")
    True
    >>> exact_match("two dogs", "3 dogs")
    False
    """
    gold = _canonical(answer)
    return bool(gold) and _canonical(answer_span(pred)) == gold


def vqa_soft_accuracy(pred: str | None, answers: list[str]) -> float:
    """VQA accuracy ``min(#annotators who gave this answer / 3, 1)`` after VQA-style normalization.

    Articles are dropped and number words become numerals, as in the official VQA evaluation.

    >>> vqa_soft_accuracy("Two", ["2", "two", "2", "3"])
    1.0
    >>> round(vqa_soft_accuracy("a cat", ["cat", "dog", "dog"]), 4)
    0.3333
    """
    guess = _canonical(answer_span(pred), drop_articles=True)
    if not guess:
        return 0.0
    matches = sum(_canonical(a, drop_articles=True) == guess for a in answers)
    return min(matches / 3.0, 1.0)


def choice_match(text: str | None, choices: list[str]) -> str | None:
    """The letter ("A", "B", ...) of the multiple-choice option an answer picks, by letter or by the option's text.

    Explicit letters win ("B", "(b)", "b) dog", "option B"), then the option's text, then a bare capital letter.

    >>> choice_match("(b)", ["cat", "dog"])
    'B'
    >>> choice_match("It is clearly a dog.", ["cat", "dog"])
    'B'
    >>> choice_match("The answer is C", ["cat", "dog"]) is None
    True
    """
    if not text or not choices:
        return None
    letters = string.ascii_uppercase[: len(choices)]
    span = _WS.sub(" ", answer_span(text))
    answer = normalize(span)
    if not answer:
        return None
    if len(answer) == 1 and answer.upper() in letters:
        return answer.upper()
    lead = _LETTER_LEAD.match(answer)
    if lead and lead.group(1).upper() in letters:
        return lead.group(1).upper()
    by_key = {key: letters[choices.index(option)] for key, option in _keyed(choices).items()}
    if answer in by_key:
        return by_key[answer]
    for pattern in (_LETTER_PAREN, _LETTER_OPTION, _LETTER_ANSWER):
        for match in pattern.finditer(span):
            if match.group(1).upper() in letters:
                return match.group(1).upper()
    by_text = _find_earliest(answer, by_key)
    if by_text is not None:
        return by_text
    for match in _LETTER_BARE.finditer(span):
        letter = match.group(1)
        # "A cat ..." and "I think ..." are words, not choices.
        if letter in letters and not (letter in "AI" and _LOWER_WORD_AHEAD.match(span, match.end())):
            return letter
    return None
