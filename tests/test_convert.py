"""Converters (mllmtune/data/convert.py) on the distribution replicas of tests/layouts.py; expected rows written
by hand."""

from __future__ import annotations

import json
import shutil

import pytest
from layouts import (
    WEBEMO_CATEGORY_TXT,
    make_emoset2k,
    make_emoset118k,
    make_emotion6,
    make_fi,
    make_webemo,
)

from mllmtune.data.convert import (
    WEBEMO_CATEGORIES,
    image_name,
    main,
    read_webemo_categories,
    webemo_labels,
    webemo_to_jsonl,
)
from mllmtune.errors import UserError

README_URL = "https://as2.ftcdn.net/jpg/00/42/93/78/220_F_42937802_2rowA8aFZs20JZ2Iq6WKArKKaaj1BIv4.jpg"
TRAIN_FILES = {  # label id -> downloaded file name, as the fixture's train25.txt lists them
    0: "220_F_42937802_2rowA8aFZs20JZ2Iq6WKArKKaaj1BIv4.jpg",
    5: "220_F_100194555_fixtureTrainAaaaaaaaaaaaaaaaaaa1.jpg",
    11: "220_F_100303395_fixtureTrainBbbbbbbbbbbbbbbbbbb2.jpg",
    2: "220_F_100322391_fixtureTrainCccccccccccccccccccc3.jpg",
    24: "220_F_100518884_fixtureTrainEeeeeeeeeeeeeeeeeeee5.jpg",
}
MISSING_LINE = "https://as2.ftcdn.net/jpg/01/00/33/13/220_F_100331361_fixtureTrainDdddddddddddddddddddd4.jpg 22"


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture()
def webemo(tmp_path):
    return make_webemo(tmp_path)


def test_webemo_train_list_to_fine_labels(webemo):
    out = webemo["root"] / "train.jsonl"
    report = webemo_to_jsonl(webemo["lists"]["train"], webemo["image_dirs"]["train"], out, level=25)
    rows = _rows(out)
    assert [(r["image"], r["answer"], r["label_id"]) for r in rows] == [
        (f"train/0/{TRAIN_FILES[0]}", "affection", 0),
        (f"train/5/{TRAIN_FILES[5]}", "disgust", 5),
        (f"train/11/{TRAIN_FILES[11]}", "irritabilty", 11),  # the release's spelling
        (f"train/2/{TRAIN_FILES[2]}", "confusion", 2),
        (f"train/24/{TRAIN_FILES[24]}", "zest", 24),
    ]
    assert rows[0]["url"] == README_URL
    # the dead URL is counted and listed in the list's own format, not silently dropped
    assert (report.lines, report.written, report.missing, report.duplicates) == (6, 5, 1, 0)
    assert report.missing_file == webemo["root"] / "train.jsonl.missing.txt"
    assert report.missing_file.read_text() == MISSING_LINE + "\n"
    assert "5 of 6 rows written; 1 images missing" in report.summary()
    # the image paths resolve from the JSONL's own folder
    assert all((out.parent / r["image"]).is_file() for r in rows)


def test_webemo_test_list_at_levels_7_and_2(webemo):
    out7, out2 = webemo["root"] / "test.jsonl", webemo["root"] / "test2.jsonl"
    r7 = webemo_to_jsonl(webemo["lists"]["test"], webemo["image_dirs"]["test"], out7, level=7)
    r2 = webemo_to_jsonl(webemo["lists"]["test"], webemo["image_dirs"]["test"], out2, level=2)
    # ids 1 cheerfullness, 10 horror, 19 sadness, 22 surprise
    assert [r["answer"] for r in _rows(out7)] == ["joy", "fear", "sadness", "surprise"]
    assert [r["answer"] for r in _rows(out2)] == ["positive", "negative", "negative", "positive"]
    assert r7.missing == r2.missing == 0 and r7.missing_file is None
    assert not (webemo["root"] / "test.jsonl.missing.txt").exists()
    assert dict(r2.labels) == {"positive": 2, "negative": 2}


def test_webemo_label_sets():
    assert len(WEBEMO_CATEGORIES) == 25 and WEBEMO_CATEGORIES[0] == ("affection", "love", "+")
    assert webemo_labels(7) == ["anger", "confusion", "fear", "joy", "love", "sadness", "surprise"]
    assert webemo_labels(2) == ["negative", "positive"]
    assert webemo_labels(25)[:3] == ["affection", "cheerfullness", "confusion"]
    with pytest.raises(UserError, match="levels 25, 7 and 2"):
        webemo_labels(6)


def test_category_txt_as_released_parses_to_the_builtin_table(tmp_path, webemo):
    assert read_webemo_categories(webemo["category_file"]) == WEBEMO_CATEGORIES
    crlf = tmp_path / "category_crlf.txt"  # ccivit/download_webEmo's copy has CRLF line ends
    crlf.write_bytes(WEBEMO_CATEGORY_TXT.replace("\n", "\r\n").encode())
    assert read_webemo_categories(crlf) == WEBEMO_CATEGORIES


def test_names_file_overrides_the_builtin_names(webemo):
    names = webemo["root"] / "names.txt"
    names.write_text("\n".join(n.replace("cheerfullness", "cheerfulness") for n in webemo_labels(25)) + "\n")
    out = webemo["root"] / "test.jsonl"
    webemo_to_jsonl(webemo["lists"]["test"], webemo["image_dirs"]["test"], out, names=names)
    assert [r["answer"] for r in _rows(out)] == ["cheerfulness", "horror", "sadness", "surprise"]
    with pytest.raises(UserError, match="level 7 needs category.txt"):
        webemo_to_jsonl(webemo["lists"]["test"], webemo["image_dirs"]["test"], out, level=7, names=names)


def test_flat_download_folder_and_output_elsewhere(tmp_path, webemo):
    flat = tmp_path / "flat"
    flat.mkdir()
    for rel in webemo["splits"]["test"]:
        shutil.copy(webemo["root"] / rel, flat / rel.split("/")[-1])
    out = tmp_path / "converted" / "webemo_test.jsonl"
    report = webemo_to_jsonl(webemo["lists"]["test"], flat, out, level=7)
    rows = _rows(out)
    assert rows[0]["image"] == "../flat/220_F_211223344_fixtureTestAaaaaaaaaaaaaaaaaaaaa1.jpg"
    assert all((out.parent / r["image"]).is_file() for r in rows) and report.written == 4


def test_empty_download_counts_as_missing_and_repeats_are_counted(webemo):
    (webemo["root"] / "test" / "10" / "220_F_211223455_fixtureTestBbbbbbbbbbbbbbbbbbbbb2.jpg").write_bytes(b"")
    lst = webemo["lists"]["test"]
    first = lst.read_text().splitlines()[0]
    lst.write_text(lst.read_text() + "\n\n" + first + "\n")  # a blank line, then line 1 again as line 6
    report = webemo_to_jsonl(lst, webemo["image_dirs"]["test"], webemo["root"] / "test.jsonl")
    assert (report.lines, report.written, report.missing, report.duplicates) == (5, 3, 1, 1)
    assert report.duplicate_lines == [6]
    assert "220_F_211223455" in report.missing_file.read_text()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("https://x/a.jpg", r"train25.txt:2: expected 'URL LABEL_ID'"),
        ("https://x/a.jpg seven", r"train25.txt:2: label id 'seven' is not a number"),
        ("https://x/a.jpg 25", r"train25.txt:2: label id 25 is past the last id 24"),
    ],
)
def test_bad_list_line_is_one_error_naming_file_and_line(webemo, line, message):
    lst = webemo["lists"]["train"]
    lines = lst.read_text().splitlines()
    lst.write_text("\n".join([lines[0], line, *lines[1:]]))
    with pytest.raises(UserError, match=message):
        webemo_to_jsonl(lst, webemo["image_dirs"]["train"], webemo["root"] / "train.jsonl")
    assert not (webemo["root"] / "train.jsonl").exists()


def test_no_image_found_and_ambiguous_name_are_errors(tmp_path, webemo):
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(UserError, match=r"test25.txt: none of its 4 images is under"):
        webemo_to_jsonl(webemo["lists"]["test"], empty, tmp_path / "t.jsonl")
    # the same file under two folders, neither named for the line's label id: refuse to guess
    name = TRAIN_FILES[5]
    for folder in ("a", "b"):
        (webemo["root"] / "train" / folder).mkdir()
        shutil.copy(webemo["root"] / "train" / "5" / name, webemo["root"] / "train" / folder / name)
    (webemo["root"] / "train" / "5" / name).unlink()
    with pytest.raises(UserError, match=r"train25.txt:2: 220_F_100194555.* is found in 2 places"):
        webemo_to_jsonl(webemo["lists"]["train"], webemo["image_dirs"]["train"], tmp_path / "t.jsonl")
    # a folder that holds both splits' downloads works: names are looked up in any sub-folder
    report = webemo_to_jsonl(webemo["lists"]["test"], webemo["root"], tmp_path / "t.jsonl")
    assert report.written == 4


def test_cli_converts_and_reports_errors_in_one_line(webemo, capsys):
    out = webemo["root"] / "train.jsonl"
    args = ["webemo", str(webemo["lists"]["train"]), str(webemo["image_dirs"]["train"]), str(out), "--level", "2"]
    assert main(args) == 0
    assert "5 of 6 rows written" in capsys.readouterr().out
    assert [r["answer"] for r in _rows(out)] == ["positive", "negative", "negative", "negative", "positive"]
    assert main(["webemo", str(webemo["lists"]["train"]), str(webemo["root"] / "nope"), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no such image folder" in err


def test_image_name_rule():
    assert image_name(README_URL) == README_URL.split("/")[-1]
    assert image_name("https://h/x/y/photo.jpg?size=220#top") == "photo.jpg"


def test_layouts_are_disjoint_and_complete(tmp_path):
    """The replicas the reader tests use: files exist, split lists are the release format, no shared pixels."""
    sets = [make_emoset118k(tmp_path), make_emoset2k(tmp_path), make_emotion6(tmp_path), make_fi(tmp_path)]
    emoset, emoset2k, emotion6, fi = sets
    entry = json.loads(emoset["split_lists"]["val"].read_text())[0]
    assert len(entry) == 4 and entry[2] == f"image/{entry[0]}/{entry[1]}.jpg" and entry[3].endswith(".json")
    assert {len(s) for s in emoset["splits"].values()} == {16, 8}
    assert set(emoset["splits"]["train"]).isdisjoint(emoset["splits"]["test"])
    ann = json.loads((emoset["path"] / emoset["annotations"][entry[2]]).read_text())
    assert ann["emotion"] == entry[0] and ann["image_id"] == entry[1]
    assert sorted(p.name for p in emoset2k["files"].values()) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
    ]
    header, first = emotion6["ground_truth"].read_text().splitlines()[:2]
    assert first == "disgust/1.jpg\t2.5\t3.8\t0.133333\t0.7\t0\t0.0666667\t0.1\t0\t0"
    assert emotion6["dominant"]["fear/2.jpg"] == "sadness" and emotion6["dominant"]["sadness/2.jpg"] is None
    assert emotion6["splits"] == fi["splits"] == {}
    contents = [(s["path"] / rel).read_bytes() for s in (emoset, emotion6, fi) for rel in s["items"]]
    assert len(contents) == 32 + 12 + 24 and len(set(contents)) == len(contents)
