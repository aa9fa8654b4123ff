"""The official VQA accuracy: answer normalisation and the leave-one-annotator-out soft score.

Written from the official evaluation code, GT-Vision-Lab/VQA ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` at
commit a013f00 (2021-03-11, "Fixed processing answers bug"), class ``VQAEval``: the tables of ``__init__``
(``contractions``, ``manualMap``, ``articles``, ``periodStrip``, ``commaStrip``, ``punct``), the per-question loop
of ``evaluate`` and the methods ``processPunctuation`` and ``processDigitArticle``.

Accuracy of a prediction against n annotator answers (``evaluate``): for each annotator, count the *other* n - 1
answers equal to the prediction, score ``min(1, count / 3)``, and average the n scores. With 10 answers and k of
them matching this is 0, 0.3, 0.6, 0.9 for k = 0, 1, 2, 3 and 1.0 for k >= 4.

Compared with lmms-eval (EvolvingLMMs-Lab/lmms-eval):

- ``lmms_eval/tasks/_task_utils/vqa_eval_metric.py: EvalAIAnswerProcessor`` (copied from mmf) has the same
  contractions, number map, articles, punctuation list and period regex; its comma regex is
  ``(?<=\\d)(\\,)+(?=\\d)`` (also matches "1,,2"). Its ``__call__`` first runs ``word_tokenize`` (lowercase,
  delete every "," and "?", "'s" -> " 's"), which the official script does not.
- ``tasks/vqav2/utils.py: vqav2_process_results`` strips both sides, then normalises the answers and the
  prediction with ``process_punctuation`` + ``process_digit_article`` *unconditionally*; the official ``evaluate``
  does so only when the stripped answers are not all identical (``len(set(gtAnswers)) > 1``), else it compares
  the stripped strings as they are. ``vqa_accuracy`` follows lmms-eval by default and the official gate with
  ``normalize_unanimous=False``.
- ``tasks/textvqa/utils.py: textvqa_process_results`` and ``tasks/ok_vqa/utils.py: ok_vqa_process_results`` apply
  the full ``EvalAIAnswerProcessor`` to the prediction and every answer and leave annotators out by index, as here;
  ``ok_vqa`` scores an empty answer list 0, as here.
"""

from __future__ import annotations

import re

# VQAEval.__init__: self.contractions, verbatim (straight apostrophes since commit 458a8b2; "somebody'd" ->
# "somebodyd" is the source's own entry). Identical to EvalAIAnswerProcessor.CONTRACTIONS.
# fmt: off
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am",
    "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's",
    "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've",
    "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd",
    "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've",
    "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
# VQAEval.__init__: self.manualMap (number words; "none" is 0 too) and self.articles.
NUMBER_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = ("a", "an", "the")
# VQAEval.__init__: self.periodStrip, same pattern. "(?!<=\\d)" is a look-ahead (the source meant a look-behind)
# that never fails in front of a ".", so in effect: delete every "." not followed by a digit ("5." -> "5", "1.5" kept).
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
# VQAEval.__init__: self.commaStrip; only ever used with re.search, as a switch: a digit, a comma, a digit.
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
# VQAEval.__init__: self.punct, in order. Neither "'" nor ":" nor "." is in it.
PUNCTUATION = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)
# fmt: on
# processPunctuation calls periodStrip.sub("", outText, re.UNICODE): the third positional argument of
# Pattern.sub is `count`, so at most re.UNICODE == 32 periods are removed. Kept for exactness.
_PERIOD_COUNT = int(re.UNICODE)


def _strip(text: str) -> str:
    """evaluate: newlines and tabs become spaces, then ``strip()``; done to the prediction and every answer."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def _process_punctuation(text: str) -> str:
    """VQAEval.processPunctuation."""
    # The test looks at the input text, not the text being rewritten; a digit-comma-digit anywhere in it means
    # every listed mark is deleted ("1,000" -> "1000"), else a mark touching a space is deleted and any other one
    # becomes a space ("a/b" -> "a b", "a / b" -> "a  b").
    delete_all = COMMA_STRIP.search(text) is not None
    out = text
    for p in PUNCTUATION:
        if delete_all or p + " " in text or " " + p in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, _PERIOD_COUNT)


def _process_digit_article(text: str) -> str:
    """VQAEval.processDigitArticle: lowercase, split on whitespace, number words to digits, drop articles, expand
    contractions (after the articles are dropped, on whole words only), join with single spaces."""
    words = [NUMBER_MAP.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(text: str) -> str:
    """An answer as the official evaluation compares it: stripped, then processPunctuation, processDigitArticle.

    >>> normalize_answer(" The Two dogs.\\n")
    '2 dogs'
    >>> normalize_answer("1,000"), normalize_answer("100.5"), normalize_answer("dont")
    ('1000', '100.5', "don't")
    """
    return _process_digit_article(_process_punctuation(_strip(text)))


def vqa_accuracy(prediction: str | None, answers: list[str], *, normalize_unanimous: bool = True) -> float:
    """Official VQA accuracy of one prediction: the mean over annotators of min(1, #other answers matching / 3).

    There are as many leave-one-out subsets as answers, whatever their number (vqaEval.py and lmms-eval both loop
    over the answers given): with n answers of which k match, the score is (k * min(1, (k-1)/3) + (n-k) *
    min(1, k/3)) / n. So a single answer always scores 0 (its only subset is empty), and 4 answers with 3 matching
    score 0.75. No answers, or a None prediction, score 0 (lmms-eval ok_vqa_process_results guards the empty case;
    vqaEval.py would divide by zero).

    Both sides are stripped and normalised by :func:`normalize_answer`. ``normalize_unanimous=False`` reproduces
    vqaEval.py's gate exactly: when the stripped answers are all the same string, neither they nor the prediction
    are normalised (vqaEval.py relies on the VQA annotation files holding answers normalised already).

    >>> vqa_accuracy("Two", ["2", "2", "two"] + ["3"] * 7)
    0.9
    """
    if prediction is None or not answers:
        return 0.0
    pred = _strip(prediction)
    golds = [_strip(answer) for answer in answers]
    if normalize_unanimous or len(set(golds)) > 1:
        pred = normalize_answer(pred)
        golds = [normalize_answer(gold) for gold in golds]
    # evaluate's per-annotator loop, summed in integers: sum(min(3, matches among the others)) / (3 n). The same
    # number as the source's float mean of min(1, matches / 3), without its rounding.
    hits = [gold == pred for gold in golds]
    matches = sum(hits)
    return sum(min(3, matches - hit) for hit in hits) / (3 * len(golds))
