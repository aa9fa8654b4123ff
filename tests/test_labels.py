"""Labels taken from the data are normalised before the label set is built; a missing answer is named as missing.
(Part of the input-robustness work: written against the old code, where both failed.)"""

from __future__ import annotations

import json

import pytest

from mllmtune.data.sources import FileData, load_examples
from mllmtune.errors import UserError


def _jsonl(tmp_path, rows) -> str:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_case_whitespace_and_unicode_variants_are_one_label(tmp_path):
    rows = [{"answer": " Amusement "}, {"answer": "amusement"}, {"answer": "ＡＷＥ"}, {"answer": "awe"}]
    examples = load_examples(FileData(source="jsonl", path=_jsonl(tmp_path, rows)))
    assert examples[0]["labels"] == ["amusement", "awe"]
    assert [e["answer"] for e in examples] == ["amusement", "amusement", "awe", "awe"]


@pytest.mark.parametrize("labels", [None, "mikels8"])
def test_a_missing_answer_is_named_as_missing(tmp_path, labels):
    rows = [{"answer": "awe"}, {"question": "Which emotion?"}]
    with pytest.raises(UserError, match=r"d.jsonl row 1: the answer is missing \(column 'answer'\)"):
        load_examples(FileData(source="jsonl", path=_jsonl(tmp_path, rows), labels=labels))
