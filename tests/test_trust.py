"""Numbers a researcher can trust on real data: each test here was written against the old code and failed there.

1. fractional per-item scores are resampled as they are; 2. train and test are never silently the same rows;
3. `eval.limit` is a seeded, stratified sample; 4. a declared benchmark's token budget is honoured in a reasoning
template; 5. VQA accuracy is the official one and POPE / ScienceQA files read as distributed; 6. intervals pair items
by id and the zero-shot baseline is keyed by the data's content; 7. the world's retention set holds no target-domain
items.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_report import ZERO, record
from typer.testing import CliRunner

from mllmtune.cli import app
from mllmtune.data.sources import FileData, load_examples
from mllmtune.errors import UserError
from mllmtune.evaluation.declared import DatasetBenchmark, DatasetBenchmarkSpec
from mllmtune.report import stats
from mllmtune.report.leaderboard import build_report
from mllmtune.runs import store

runner = CliRunner()


def _png(color=(200, 20, 20), size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _record(**kw) -> dict:
    """A valid run record (test_report's), evaluated on the in-domain target and a soft-scored retention set."""
    return record(**({"recipe": {"eval": {"target": ["emoscenes-photo"], "retention": ["soft"], "limit": None}}} | kw))


def _table(results: Path, records: list[dict], preds: dict[tuple[str, str], list[dict]]) -> None:
    results.mkdir(parents=True, exist_ok=True)
    with (results / store.RUNS_FILE).open("a") as handle:
        for rec in records:
            handle.write(json.dumps(rec) + "\n")
    for (run_id, key), rows in preds.items():
        store.write_predictions(results, run_id, key, rows)


T, S = "emoscenes-photo@1", "soft@1"


def _zero(scores: dict) -> dict:
    """test_report's zero-shot record, with these scores."""
    return {**ZERO, "scores": scores}


# ---------------------------------------------------------------------------------------------------------------
# 1. fractional scores


def test_fractional_scores_are_read_back_as_fractions(tmp_path):
    store.write_predictions(tmp_path, "r", S, [{"index": 0, "correct": 0.3}, {"index": 1, "correct": 0.6}])
    assert stats.read_correct(store.predictions_path(tmp_path, "r", S)).tolist() == [0.3, 0.6]


def test_interval_of_a_soft_accuracy_contains_its_estimate(tmp_path):
    """Base scores 0.3 on every retention item, the tuned model 0.4: F = +10 exactly, and so is every draw."""
    n = 6
    base_soft = [{"id": str(i), "index": i, "correct": 0.3} for i in range(n)]
    tuned_soft = [{"id": str(i), "index": i, "correct": 0.4} for i in range(n)]
    target = [{"id": str(i), "index": i, "correct": True} for i in range(n)]
    zero = _zero({T: {"accuracy": 100.0, "n": n}, S: {"accuracy": 30.0, "n": n}})
    tuned = _record(scores={T: {"accuracy": 100.0, "n": n}, S: {"accuracy": 40.0, "n": n}}, baseline=zero["scores"])
    _table(tmp_path, [zero, tuned], {("zs", T): target, ("zs", S): base_soft, ("r", T): target, ("r", S): tuned_soft})
    row = build_report(tmp_path).leaderboard.iloc[0]
    assert row["F"] == pytest.approx(10.0)
    assert row["F_lo"] == pytest.approx(10.0) and row["F_hi"] == pytest.approx(10.0)


# ---------------------------------------------------------------------------------------------------------------
# 6. pairing by id


def test_intervals_pair_items_by_id_not_by_position(tmp_path):
    """Tuned answers equal the base's item by item, stored in reverse order: the difference is 0 in every draw."""
    ids = ["a", "b", "c", "d"]
    base = [{"id": i, "index": k, "correct": c} for k, (i, c) in enumerate(zip(ids, [1, 1, 0, 0], strict=True))]
    tuned = list(reversed(base))
    zero = _zero({T: {"accuracy": 50.0, "n": 4}, S: {"accuracy": 50.0, "n": 4}})
    rec = _record(scores=zero["scores"], baseline=zero["scores"])
    _table(tmp_path, [zero, rec], {("zs", T): base, ("zs", S): base, ("r", T): tuned, ("r", S): tuned})
    row = build_report(tmp_path).leaderboard.iloc[0]
    assert (row["E_lo"], row["E_hi"]) == (0.0, 0.0)


def test_mismatched_item_sets_are_named_not_mispaired(tmp_path):
    base = [{"id": i, "index": k, "correct": 1} for k, i in enumerate("abcd")]
    tuned = [{"id": i, "index": k, "correct": 1} for k, i in enumerate("abce")]
    zero = _zero({T: {"accuracy": 100.0, "n": 4}, S: {"accuracy": 100.0, "n": 4}})
    rec = _record(scores=zero["scores"], baseline=zero["scores"])
    _table(tmp_path, [zero, rec], {("zs", T): base, ("zs", S): base, ("r", T): tuned, ("r", S): base})
    report = build_report(tmp_path)
    assert np.isnan(report.leaderboard.iloc[0]["E_lo"])
    assert any("emoscenes-photo@1" in w and "item" in w for w in report.warnings), report.warnings


# ---------------------------------------------------------------------------------------------------------------
# 2. splits


def test_split_named_in_file_names_reads_only_that_split(tmp_path):
    rows = lambda labels: pd.DataFrame(  # noqa: E731
        [{"image": [{"bytes": _png((i * 40, 0, 0)), "path": None}], "answer": a} for i, a in enumerate(labels)]
    )
    rows(["joy", "fear", "joy"]).to_parquet(tmp_path / "emoset_train.parquet")
    rows(["fear"]).to_parquet(tmp_path / "emoset_test.parquet")
    test = load_examples(FileData(source="parquet", path=str(tmp_path), split="test"))
    train = load_examples(FileData(source="parquet", path=str(tmp_path), split="train"))
    assert (len(test), len(train)) == (1, 3)


def _folder(root: Path, labels=("anger", "fear", "joy"), per=4) -> Path:
    for k, label in enumerate(labels):
        (root / label).mkdir(parents=True)
        for i in range(per):
            Image.new("RGB", (8, 8), (40 * k, 10 * i, 0)).save(root / label / f"{i}.png")
    return root


def test_image_folder_without_split_folders_is_refused(tmp_path):
    _folder(tmp_path / "Emotion6")
    with pytest.raises(UserError, match="split 'test'.*holdout"):
        load_examples(FileData(source="imagefolder", path=str(tmp_path / "Emotion6"), split="test"))


def test_holdout_split_is_disjoint_stratified_and_stable(tmp_path):
    root = _folder(tmp_path / "Emotion6", per=5)
    spec = dict(source="imagefolder", path=str(root), holdout={"fraction": 0.2, "seed": 0})
    train = load_examples(FileData(**spec, split="train"))
    test = load_examples(FileData(**spec, split="test"))
    assert len(test) == 3 and len(train) == 12  # one of five per label
    assert sorted(e["answer"] for e in test) == ["anger", "fear", "joy"]
    assert not {e["id"] for e in test} & {e["id"] for e in train}
    assert [e["id"] for e in load_examples(FileData(**spec, split="test"))] == [e["id"] for e in test]


def _recipe(tmp_path: Path, data: dict, eval_data: dict, name: str = "emo") -> Path:
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "leak",
                "model": {"id": "world"},
                "data": data,
                "strategy": {"name": "lora"},
                "stage": {"max_steps": 1},
                "eval": {"datasets": {name: {"data": eval_data}}, "target": [name], "retention": []},
            }
        )
    )
    return path


def test_a_run_that_trains_on_its_test_source_is_refused(tmp_path):
    root = _folder(tmp_path / "data")
    same = {"source": "imagefolder", "path": str(root), "split": "all"}
    recipe = _recipe(tmp_path, same, same, name="emo-whole")
    result = runner.invoke(app, ["train", "--recipe", str(recipe), "--results", str(tmp_path / "res")])
    assert result.exit_code == 2, result.output
    assert "12 training row(s)" in result.output and "overlap" in result.output
    assert not (tmp_path / "res").exists() or not (tmp_path / "res" / store.RUNS_FILE).exists()


def test_a_run_whose_train_and_test_are_the_same_rows_is_refused(tmp_path):
    root = _folder(tmp_path / "data")
    data = {"source": "imagefolder", "path": str(root), "holdout": {"fraction": 0.25, "seed": 0}}
    # Two held-out splits of one folder with different seeds: some training images are test images.
    recipe = _recipe(
        tmp_path, data | {"split": "train"}, data | {"holdout": {"fraction": 0.5, "seed": 1}, "split": "test"}
    )
    result = runner.invoke(app, ["train", "--recipe", str(recipe), "--results", str(tmp_path / "res")])
    assert result.exit_code == 2, result.output
    assert "overlap" in result.output and "eval.datasets.emo.data" in result.output
    assert not (tmp_path / "res" / store.RUNS_FILE).exists()


# ---------------------------------------------------------------------------------------------------------------
# 3. eval.limit


def test_limit_is_a_stratified_sample_not_the_first_class(tmp_path):
    root = _folder(tmp_path / "test")
    spec = DatasetBenchmarkSpec(data=FileData(source="imagefolder", path=str(tmp_path), split="test"))
    bench = DatasetBenchmark("emo6", 1, "target", "emotion", "", spec=spec, metric="label")
    first = bench.examples(limit=3)
    assert sorted(e["answer"] for e in first) == ["anger", "fear", "joy"]
    assert [e["id"] for e in bench.examples(limit=3)] == [e["id"] for e in first]
    assert root.exists()


def test_world_limit_samples_every_task(micro_world):
    from mllmtune.evaluation.benchmarks import BENCHMARKS

    tasks = {e["task"] for e in BENCHMARKS["world-general"].examples(limit=4)}
    assert len(tasks) >= 3, tasks


# ---------------------------------------------------------------------------------------------------------------
# 4. token budget


def test_declared_token_budget_is_honoured_in_a_reasoning_template(tmp_path):
    spec = DatasetBenchmarkSpec(data=FileData(source="imagefolder", path=str(tmp_path)), max_new_tokens=1024)
    bench = DatasetBenchmark("emo", 1, "target", "emotion", "", spec=spec, metric="label", max_new_tokens=1024)
    assert bench.new_tokens("emo-r3") == 1024


def test_real_model_reasoning_budget_is_not_the_worlds():
    spec = DatasetBenchmarkSpec(data=FileData(source="parquet", path="x"))
    bench = DatasetBenchmark("emo", 1, "target", "emotion", "", spec=spec, metric="label")
    assert bench.new_tokens("emo-r3") >= 1024


# ---------------------------------------------------------------------------------------------------------------
# 5. VQA and the sets as distributed


def _vqa_bench(tmp_path: Path, metric: str, **data) -> DatasetBenchmark:
    spec = DatasetBenchmarkSpec(data=FileData(source="jsonl", path=str(tmp_path), task="vqa", **data), metric=metric)
    return DatasetBenchmark("v", 1, "retention", "general", "", spec=spec, metric=metric)


def test_vqa_soft_is_the_official_metric(tmp_path):
    """Two of ten annotators said 'cat': the mean over the ten 9-annotator subsets of min(matches / 3, 1) is
    (2 * 1/3 + 8 * 2/3) / 10 = 0.6."""
    bench = _vqa_bench(tmp_path, "vqa_soft")
    answers = ["cat", "cat"] + ["dog"] * 8
    assert bench.score_one({"answer": "dog", "answers": answers}, "A cat.")[1] == pytest.approx(0.6)


def test_pope_as_distributed_reads(tmp_path):
    """POPE ships `.json` files holding JSON lines, the question under `text`, the answer under `label`."""
    Image.new("RGB", (8, 8)).save(tmp_path / "COCO_val2014_000000000001.jpg")
    lines = [
        {
            "question_id": 1,
            "image": "COCO_val2014_000000000001.jpg",
            "text": "Is there a dog in the image?",
            "label": "no",
        },
        {
            "question_id": 2,
            "image": "COCO_val2014_000000000001.jpg",
            "text": "Is there a cat in the image?",
            "label": "yes",
        },
    ]
    (tmp_path / "coco_pope_random.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    examples = load_examples(FileData(source="jsonl", path=str(tmp_path / "coco_pope_random.json"), task="vqa"))
    assert [e["prompt"] for e in examples] == [x["text"] for x in lines]
    assert [e["answer"] for e in examples] == ["no", "yes"] and [e["id"] for e in examples] == ["1", "2"]


def test_scienceqa_img_keeps_image_questions_with_their_context(tmp_path):
    rows = [
        {
            "image": {"bytes": _png(), "path": None},
            "question": "Which is a mammal?",
            "hint": "Look at the picture.",
            "choices": ["cat", "fish"],
            "answer": 0,
        },
        {"image": None, "question": "What is 2+2?", "hint": "", "choices": ["3", "4"], "answer": 1},
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "test.parquet")
    spec = FileData(source="parquet", path=str(tmp_path), split="test", task="vqa", require_image=True)
    examples = load_examples(spec)
    assert len(examples) == 1
    assert examples[0]["prompt"].startswith("Context: Look at the picture.\nWhich is a mammal?")
    assert examples[0]["answer"] == "A"


def test_script_based_hub_data_set_is_one_line(monkeypatch):
    import datasets

    def refuse(*a, **k):
        raise RuntimeError("Dataset scripts are no longer supported, but found ScienceQA.py")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(UserError, match="loading script"):
        load_examples(FileData(source="hub", path="someone/ScienceQA", split="test", task="vqa"))


# ---------------------------------------------------------------------------------------------------------------
# 6. the baseline is keyed by the data's content


def test_a_redeclared_data_set_is_scored_again(tmp_path, bundle):
    from rich.console import Console

    from mllmtune.evaluation.benchmarks import BENCHMARKS
    from mllmtune.evaluation.declared import register
    from mllmtune.runs.zero_shot import baseline_scores

    results = tmp_path / "res"
    for colors in ((0, 0, 0), (255, 255, 255)):
        folder = tmp_path / f"set{colors[0]}" / "test" / "joy"
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8), colors).save(folder / "0.png")
        spec = DatasetBenchmarkSpec(data=FileData(source="imagefolder", path=str(folder.parent.parent), split="test"))
        BENCHMARKS.pop("redeclared", None)
        register("redeclared", spec, "target")
        baseline_scores(bundle, ["redeclared"], None, 4, results, None, Console(quiet=True))
    records, _ = store.read_records(results)
    BENCHMARKS.pop("redeclared", None)
    assert len([r for r in records if r["stage"] == "zero-shot"]) == 2


# ---------------------------------------------------------------------------------------------------------------
# 7. the world's retention set


def test_world_retention_set_holds_no_target_domain_items(micro_world):
    from mllmtune.evaluation.benchmarks import BENCHMARKS

    examples = BENCHMARKS["world-general"].examples()
    assert examples and not [e for e in examples if e["task"] == "emotion_text"]
    assert all(e.get("subset") != "scene" for e in examples)
    assert "world-emotion-knowledge" in BENCHMARKS


def test_split_all_takes_a_split_less_folder_whole_on_purpose(tmp_path):
    root = _folder(tmp_path / "Emotion6")
    assert len(load_examples(FileData(source="imagefolder", path=str(root), split="all"))) == 12


def test_emoset_split_lists_as_distributed(tmp_path):
    from layouts import make_emoset118k

    made = make_emoset118k(tmp_path)
    for split, expected in made["splits"].items():
        spec = FileData(
            source="imagefolder",
            path=str(made["path"] / "image"),
            split=split,
            split_list=str(made["path"] / f"{split}.json"),
        )
        assert len(load_examples(spec)) == len(expected), split


def test_split_list_naming_a_missing_image_is_one_line(tmp_path):
    root = _folder(tmp_path / "data")
    (tmp_path / "test.json").write_text(json.dumps([["joy", "image/joy/0.png"], ["joy", "image/joy/99.png"]]))
    spec = FileData(source="imagefolder", path=str(root), split="test", split_list=str(tmp_path / "test.json"))
    with pytest.raises(UserError, match=r"names 1 item\(s\) not in the data \(first: image/joy/99.png\)"):
        load_examples(spec)


def test_a_hub_split_that_does_not_exist_is_one_line(monkeypatch):
    import datasets

    def refuse(*a, **k):
        raise ValueError("Unknown split \"tset\". Should be one of ['train', 'test'].")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(UserError, match=r"data.split 'tset': not a split of someone/EmoSet2k \(Unknown split"):
        load_examples(FileData(source="hub", path="someone/EmoSet2k", split="tset"))


def test_a_split_column_without_the_split_is_one_line(tmp_path):
    pd.DataFrame([{"image": None, "answer": "joy", "split": "train"}]).to_parquet(tmp_path / "all.parquet")
    with pytest.raises(UserError, match=r"data.split 'test': not a value of .*'split' column \(values: train\)"):
        load_examples(FileData(source="parquet", path=str(tmp_path), split="test"))


@pytest.mark.parametrize("layout", ["emoset2k", "emotion6", "fi"])
def test_emotion_sets_as_distributed_give_disjoint_splits(tmp_path, layout):
    """The data blocks docs/data.md gives: EmoSet2k's split files, a holdout of the split-less Emotion6 and FI."""
    import layouts

    made = getattr(layouts, f"make_{layout}")(tmp_path)
    block = {"source": made["source"], "path": str(made["path"]), "labels": made["labels"]}
    if not made["splits"]:
        block["holdout"] = {"fraction": 0.2, "seed": 0}
    train = load_examples(FileData(**block, split="train"))
    test = load_examples(FileData(**block, split="test"))
    assert train and test and not {e["image_sha"] for e in train} & {e["image_sha"] for e in test}
    if not made["splits"]:  # a holdout keeps every image on exactly one side, each label's share within one item
        assert len(train) + len(test) == len(made["items"]) and len(test) == round(0.2 * len(made["items"]))
        for label in set(made["items"].values()):
            n = sum(v == label for v in made["items"].values())
            assert abs(sum(e["answer"] == label for e in test) - 0.2 * n) < 1, label


def test_holdout_keeps_copies_of_an_image_on_one_side(tmp_path):
    """Two copies of each image (e.g. FI's duplicates): held out together, so the split stays disjoint by content."""
    root = _folder(tmp_path / "FI", per=5)
    for label in ("anger", "fear", "joy"):
        for i in range(5):
            (root / label / f"copy{i}.png").write_bytes((root / label / f"{i}.png").read_bytes())
    spec = dict(source="imagefolder", path=str(root), holdout={"fraction": 0.2, "seed": 0})
    train, test = (load_examples(FileData(**spec, split=s)) for s in ("train", "test"))
    assert len(train) + len(test) == 30 and len(test) == 6  # 3 of 15 distinct images, each with its copy
    assert not {e["image_sha"] for e in train} & {e["image_sha"] for e in test}


def test_vqa_soft_on_a_set_without_ten_answers_is_one_line(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "test.jsonl").write_text(json.dumps({"image": "a.png", "question": "What?", "answer": "cat"}) + "\n")
    with pytest.raises(UserError, match=r"1 answer\(s\), and metric vqa_soft needs the 10 annotators' answers"):
        _vqa_bench(tmp_path, "vqa_soft", split="test").examples()


def test_a_hub_holdout_pools_the_sets_splits(monkeypatch):
    import datasets

    def load(path, split=None, revision=None):
        assert split is None  # the pool: every split the set ships

        def rows(a, b):
            return [{"image": None, "question": f"q{i}", "answer": "joy" if i % 2 else "fear"} for i in range(a, b)]

        return datasets.DatasetDict(
            train=datasets.Dataset.from_list(rows(0, 8)), test=datasets.Dataset.from_list(rows(8, 10))
        )

    monkeypatch.setattr(datasets, "load_dataset", load)
    spec = dict(source="hub", path="someone/set", holdout={"fraction": 0.2, "seed": 0})
    train, test = (load_examples(FileData(**spec, split=s)) for s in ("train", "test"))
    assert (len(train), len(test)) == (8, 2) and not {e["id"] for e in train} & {e["id"] for e in test}


@pytest.mark.slow
def test_a_user_error_in_the_tuned_evaluation_keeps_the_model(micro_world, tmp_path, monkeypatch):
    from mllmtune.evaluation import runner as eval_runner

    real, calls = eval_runner.evaluate, []

    def evaluate(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:  # the base scores; the tuned model's evaluation fails as a bad task would
            raise UserError("lmms:x: a task that cannot be scored")
        return real(*args, **kwargs)

    monkeypatch.setattr(eval_runner, "evaluate", evaluate)
    results = tmp_path / "res"
    args = ["train", "--recipe", "recipes/world/sft-freeze-vision.yaml", "--results", str(results)]
    res = runner.invoke(app, args + ["--set", "stage.max_steps=1", "--set", "eval.limit=2"])
    assert res.exit_code == 2 and "a task that cannot be scored" in res.output
    records, _ = store.read_records(results)
    assert [r["status"] for r in records] == ["success", "failed"]
    assert (results / records[1]["artifacts"]["model"]).is_dir() and "cannot be scored" in records[1]["error"]
