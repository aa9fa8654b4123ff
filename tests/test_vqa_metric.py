"""The official VQA accuracy (GT-Vision-Lab/VQA vqaEval.py): expected values worked out by hand from its rules.

Scoring rule (VQAEval.evaluate): with n answers of which k equal the prediction, each matching annotator's left-out
subset holds k - 1 matches and each other annotator's holds k; the score is the mean of min(1, matches / 3).
"""

from __future__ import annotations

import doctest
import time

import pytest

from mllmtune.evaluation import vqa
from mllmtune.evaluation.vqa import normalize_answer, vqa_accuracy


def test_doctests() -> None:
    result = doctest.testmod(vqa)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    ("pred", "answers", "expected"),
    [
        # k=0 of 10: every subset has 0 matches -> 0
        ("cat", ["dog"] * 10, 0.0),
        # k=1: 1 subset x min(1, 0/3) + 9 subsets x min(1, 1/3) = 3 -> 3/10
        ("cat", ["cat"] + ["dog"] * 9, 0.3),
        # k=2: 2 x 1/3 + 8 x 2/3 = 6 -> 6/10
        ("cat", ["cat"] * 2 + ["dog"] * 8, 0.6),
        # k=3: 3 x 2/3 + 7 x 1 = 9 -> 9/10
        ("cat", ["cat"] * 3 + ["dog"] * 7, 0.9),
        # k=4: 4 x min(1, 3/3) + 6 x 1 = 10 -> 1
        ("cat", ["cat"] * 4 + ["dog"] * 6, 1.0),
        # k=10: 10 x min(1, 9/3) = 10 -> 1
        ("cat", ["cat"] * 10, 1.0),
        # the order of the answers is irrelevant: k=2 again
        ("cat", ["dog", "cat", "bird", "dog", "dog", "cat", "dog", "dog", "dog", "dog"], 0.6),
    ],
)
def test_ten_annotators(pred: str, answers: list[str], expected: float) -> None:
    assert vqa_accuracy(pred, answers) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("pred", "answers", "expected"),
    [
        # n=4, k=3: 3 x min(1, 2/3) + 1 x min(1, 3/3) = 3 -> 3/4
        ("2", ["2", "two", "2", "3"], 0.75),
        # n=4, k=1: 1 x 0 + 3 x 1/3 = 1 -> 1/4
        ("3", ["2", "two", "2", "3"], 0.25),
        # n=3, k=3: 3 x min(1, 2/3) = 2 -> 2/3
        ("cat", ["cat"] * 3, 2 / 3),
        # n=1, k=1: the only subset is empty, 0 matches -> 0 (vqaEval.py and lmms-eval alike)
        ("cat", ["cat"], 0.0),
        # no answers: 0, as lmms-eval ok_vqa_process_results (vqaEval.py would divide by zero)
        ("cat", [], 0.0),
        # no prediction at all
        (None, ["cat"] * 10, 0.0),
    ],
)
def test_fewer_answers(pred: str | None, answers: list[str], expected: float) -> None:
    assert vqa_accuracy(pred, answers) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # articles: processDigitArticle drops the whole words a / an / the (after lowercasing)
        ("a dog", "dog"),
        ("An apple", "apple"),
        ("THE cat", "cat"),
        ("theater", "theater"),  # only whole words
        # number words (manualMap), after lowercasing; only zero..ten and "none"
        ("two", "2"),
        ("Ten", "10"),
        ("none", "0"),
        ("eleven", "eleven"),
        ("the two dogs", "2 dogs"),
        # contractions map, whole words after lowercasing: its capitalised keys ("Im") can never match
        ("dont", "don't"),
        ("wont", "won't"),
        ("don't", "don't"),  # "'" is not in punct, so it survives
        ("Im", "im"),
        # commaStrip (digit , digit) anywhere -> every punct mark is deleted, not spaced
        ("1,000", "1000"),
        ("x-ray 2,5", "xray 25"),  # the switch is input-wide: "-" is deleted too
        # no digit-comma-digit: a mark touching a space is deleted ("1, 2" -> "1 2"), else it becomes a space
        ("1, 2", "1 2"),
        ("red,blue", "red blue"),
        ("cat/dog", "cat dog"),
        ("cat / dog", "cat dog"),  # "/" deleted -> "cat  dog", split() joins with one space
        ("well-known", "well known"),
        ("hello!", "hello"),  # "!" -> " ", and split() eats the trailing blank
        # periodStrip: a "." not followed by a digit is deleted, one before a digit is kept
        ("100.5", "100.5"),
        ("1,000.5", "1000.5"),  # comma deleted by the switch, "." kept before "5"
        ("5.", "5"),
        ("yes.", "yes"),
        ("e.g.", "eg"),
        # case and whitespace: \n and \t become spaces, strip(), lower(), split() and join with single spaces
        ("YES", "yes"),
        ("  big   red\tdog \n", "big red dog"),
        # no EvalAI word_tokenize: "'s" is not split off (lmms-eval's EvalAIAnswerProcessor gives "man 's")
        ("man's", "man's"),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("pred", "answers", "raw_k", "expected"),
    [
        # "The Two." -> periodStrip "The Two" -> lower, "two" -> "2", "the" dropped -> "2"; k=3 of 10 -> 0.9
        ("The Two.", ["2"] * 3 + ["3"] * 7, 0, 0.9),
        # "Dont!" -> "!" touches no space -> "Dont " -> "dont" -> "don't"; k=2 -> 0.6
        ("Dont!", ["don't", "don't"] + ["no"] * 8, 0, 0.6),
        # the answers are normalised too: "a dog", "A dog.", "the dog" -> "dog"; k=3 -> 0.9
        ("dog", ["a dog", "A dog.", "the dog"] + ["cat"] * 7, 0, 0.9),
        # "1,000" -> "1000": k goes from 2 (raw, 0.6) to 4 -> 1.0
        ("1000", ["1,000", "1,000", "1000", "1000"] + ["10"] * 6, 2, 1.0),
    ],
)
def test_matches_only_after_normalisation(pred: str, answers: list[str], raw_k: int, expected: float) -> None:
    assert sum(answer == pred for answer in answers) == raw_k
    assert vqa_accuracy(pred, answers) == pytest.approx(expected)
    # the answers differ, so vqaEval.py's gate normalises too and gives the same number
    assert vqa_accuracy(pred, answers, normalize_unanimous=False) == pytest.approx(expected)


def test_official_gate_on_unanimous_answers() -> None:
    """vqaEval.py normalises only when len(set(stripped answers)) > 1: with ten "2"s it compares strings as they
    are, so "Two" scores 0 (k=0) and " 2\\n" (stripped to "2") scores 1; by default both score 1 (k=10)."""
    answers = ["2"] * 10
    assert vqa_accuracy("Two", answers, normalize_unanimous=False) == 0.0
    assert vqa_accuracy(" 2\n", answers, normalize_unanimous=False) == 1.0
    assert vqa_accuracy("Two", answers) == 1.0


def test_period_strip_count_quirk() -> None:
    """processPunctuation passes re.UNICODE (32) as periodStrip.sub's `count`: only the first 32 periods go."""
    # 40 x "a.": the first 32 dots are deleted -> 32 "a"s run into the 33rd "a", the last 8 "a." stay
    assert normalize_answer("a." * 40) == "a" * 32 + "a." * 8


def test_long_inputs_are_fast() -> None:
    start = time.perf_counter()
    assert vqa_accuracy("two " * 25_000, ["2"] * 10) == 0.0
    # digit-comma-digit: all commas deleted; the 100k dots lose only 32 (the count quirk above)
    assert normalize_answer("1,0 " * 25_000 + "." * 100_000) == "10 " * 25_000 + "." * (100_000 - 32)
    assert time.perf_counter() - start < 1.0
