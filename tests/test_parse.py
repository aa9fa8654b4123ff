"""Answer parsing: table-driven cases, worst-case input length, and the module's doctests."""

from __future__ import annotations

import doctest
import time

import pytest

from mllmtune.evaluation import parse
from mllmtune.evaluation.parse import (
    answer_span,
    choice_match,
    exact_match,
    extract_boxed,
    match_label,
    normalize,
    parse_yes_no,
    vqa_soft_accuracy,
)

EMOTIONS = ["happy", "sad", "angry", "very happy", "sadness"]


def test_doctests() -> None:
    result = doctest.testmod(parse, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        (None, ""),
        ("  Hello   World \n\t ", "hello world"),
        ("The answer is B.", "b"),
        ("Answer: (C)", "c"),
        ("**Final answer:** 'Yes'", "yes"),
        ("“Café”", "café"),
        ("ＡＢＣ", "abc"),  # full-width letters fold to ASCII
        ("3.5", "3.5"),
        ("-2", "-2"),
        ("answer", "answer"),  # the word alone is not a preamble
        ("...", ""),
    ],
)
def test_normalize(text: str | None, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{42}", "42"),
        (r"so \boxed{ x }", "x"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{{a}{b{c}}}", "{a}{b{c}}"),
        (r"first \boxed{1} then \boxed{2}", "2"),
        (r"\boxed{1} then \boxed{2", None),  # the last one is cut off: no answer rather than a stale one
        (r"\boxed{a \} b}", r"a \} b"),  # escaped braces do not count
        (r"\boxed {7}", "7"),
        (r"\boxed{}", ""),
        ("no box here", None),
        ("", None),
        (None, None),
        (r"\boxed{😀 счастье}", "😀 счастье"),
    ],
)
def test_extract_boxed(text: str | None, expected: str | None) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"think... \boxed{\text{sad}}", "sad"),
        (r"\boxed{\text{a} + \text{b}}", r"\text{a} + \text{b}"),  # a wrapper only goes when it spans everything
        ("<think>happy?</think><answer> sad </answer>", "sad"),
        ("<think>happy?</think> sad", "sad"),
        ("<ANSWER>sad", "sad"),  # cut off before the closing tag
        ("plain", "plain"),
    ],
)
def test_answer_span(text: str, expected: str) -> None:
    assert answer_span(text) == expected


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("sad", EMOTIONS, "sad"),
        ("SAD.", EMOTIONS, "sad"),
        ("The answer is: Angry", EMOTIONS, "angry"),
        ("I feel sad, not angry", EMOTIONS, "sad"),  # earliest whole word
        ("angry or sad", EMOTIONS, "angry"),
        ("sadness", EMOTIONS, "sadness"),  # 'sad' is a prefix but not a whole word here
        ("The person looks very happy today", EMOTIONS, "very happy"),  # longest label at the same position
        ("they are happy", EMOTIONS, "happy"),
        ("unhappy", EMOTIONS, None),
        (r"maybe happy... \boxed{sad}", EMOTIONS, "sad"),  # boxed answer overrides the text
        ("<think>happy or sad</think><answer>angry</answer>", EMOTIONS, "angry"),
        ("Happy", ["Happy", "happy"], "Happy"),  # duplicates after normalization: the first wins
        ("", EMOTIONS, None),
        (None, EMOTIONS, None),
        ("sad", [], None),
        ("Он выглядит грустным, грусть", ["радость", "грусть"], "грусть"),
        ("Ｓａｄ", EMOTIONS, "sad"),
        ("l'émotion est la colère", ["joie", "colère"], "colère"),
        ("c++ or c", ["c", "c++"], "c++"),
    ],
)
def test_match_label(text: str | None, labels: list[str], expected: str | None) -> None:
    assert match_label(text, labels) == expected


def test_long_inputs_are_fast() -> None:
    noise = "lorem ipsum dolor sit amet { } \\boxed{ " * 2600  # 100k characters, many unclosed boxes
    text = noise + " so sadness overall"
    assert len(text) > 100_000
    start = time.perf_counter()
    assert match_label(text, EMOTIONS) == "sadness"  # the last \boxed never closes, so the text is searched
    assert match_label("x" * 100_000 + " sad", EMOTIONS) == "sad"
    assert parse_yes_no("maybe " * 20_000 + "yes") == "yes"
    assert choice_match("b" * 100_000, ["cat", "dog"]) is None
    assert vqa_soft_accuracy("two " * 25_000, ["2"]) == 0.0
    assert extract_boxed("{" * 100_000 + r"\boxed{" + "{" * 100_000) is None
    assert extract_boxed(r"\boxed{" * 50_000 + "x" + "}" * 50_000) == "x"
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    "text",
    [
        "answer" + " " * 100_000 + "!",  # long blanks after a cue word: no backtracking blow-up
        "Option" + "\t" * 100_000 + "!",
        "the answer is " * 8000,
        "(" * 100_000,
        "\\" * 100_000,
        "<answer>" * 12_000,
        ("A" + " " * 1000) * 100,
        "very " * 20_000,
        ".,;:" * 25_000 + "x" + ".,;:" * 25_000,
    ],
    ids=lambda t: repr(t[:12]),
)
def test_worst_case_inputs_are_linear(text: str) -> None:
    start = time.perf_counter()
    for func in (normalize, extract_boxed, answer_span, parse_yes_no):
        func(text)
    match_label(text, EMOTIONS + [f"label{i}" for i in range(50)])
    choice_match(text, CHOICES)
    exact_match(text, "2")
    vqa_soft_accuracy(text, ["2"] * 10)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("no.", "no"),
        ("NO, it is not", "no"),
        ("Yes, although no one agrees", "yes"),
        ("The answer is yes", "yes"),
        ("I do not know", None),  # 'not', 'know' and 'nothing' are not 'no'
        ("nothing yesterday", None),
        (r"<think>no</think>\boxed{yes}", "yes"),
        ("", None),
        (None, None),
    ],
)
def test_parse_yes_no(text: str | None, expected: str | None) -> None:
    assert parse_yes_no(text) == expected


@pytest.mark.parametrize(
    ("pred", "answer", "expected"),
    [
        ("2", "two", True),
        ("Two.", "2", True),
        ("ten", "10", True),
        ("zero", "0", True),
        ("eleven", "11", False),  # only 0-10 are mapped
        ("two dogs", "2 dogs", True),
        ("Paris", "paris", True),
        ("The answer is Paris.", "Paris", True),
        (r"\boxed{3}", "three", True),
        ("3", "three apples", False),
        ("", "", False),
        (None, "x", False),
    ],
)
def test_exact_match(pred: str | None, answer: str | None, expected: bool) -> None:
    assert exact_match(pred, answer) is expected


@pytest.mark.parametrize(
    ("pred", "answers", "expected"),
    [
        # 10 annotators; the score is min(#matching / 3, 1)
        ("cat", ["cat"] * 3 + ["dog"] * 7, 1.0),
        ("cat", ["cat"] * 2 + ["dog"] * 8, 2 / 3),
        ("cat", ["cat"] + ["dog"] * 9, 1 / 3),
        ("bird", ["cat"] * 10, 0.0),
        ("Two", ["2", "two", "2 ", "3"], 1.0),  # numerals and words agree after normalization
        ("the cat", ["a cat", "cat", "dog"], 2 / 3),  # articles dropped
        ("", ["", "", ""], 0.0),
        ("cat", [], 0.0),
    ],
)
def test_vqa_soft_accuracy(pred: str, answers: list[str], expected: float) -> None:
    assert vqa_soft_accuracy(pred, answers) == pytest.approx(expected)


CHOICES = ["a red cat", "a dog", "a green parrot", "none of these"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(c)", "C"),
        ("D.", "D"),
        ("Answer: (B)", "B"),
        ("The answer is B because it barks", "B"),
        ("b) a dog", "B"),
        ("I choose option c", "C"),
        ("A dog", "B"),  # article 'A', then the text of choice B
        ("a dog", "B"),
        ("It is a green parrot.", "C"),
        ("I think C", "C"),
        ("E", None),  # only four choices
        ("no idea", None),
        (r"\boxed{A}", "A"),
        ("<think>maybe (A)</think><answer>(D)</answer>", "D"),
        ("", None),
    ],
)
def test_choice_match(text: str, expected: str | None) -> None:
    assert choice_match(text, CHOICES) == expected
