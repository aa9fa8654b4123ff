"""Data sources: small files in each format load into the expected examples, and bad input is one clear line."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from PIL import Image

from mllmtune.config.recipe import validate
from mllmtune.data.sources import LABEL_SETS, FileData, load_examples
from mllmtune.errors import UserError
from mllmtune.evaluation.declared import DatasetBenchmark, DatasetBenchmarkSpec


def _png(color=(200, 20, 20), size=(12, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def spec(**kw) -> FileData:
    return FileData.model_validate(kw)


def test_emo_r3_parquet_with_embedded_image_bytes(tmp_path):
    """EMO-R3's released schema: `problem`, `answer`, `images` (a list of {bytes, path})."""
    rows = [
        {"problem": "<image>Which emotion?", "answer": "Sadness", "images": [{"bytes": _png(), "path": None}]},
        {"problem": "<image>Which emotion?", "answer": "awe", "images": [{"bytes": _png((0, 0, 255)), "path": None}]},
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "train-00000.parquet")
    examples = load_examples(spec(source="parquet", path=str(tmp_path), labels="mikels8"))
    assert [e["answer"] for e in examples] == ["sadness", "awe"]
    assert examples[0]["prompt"] == "Which emotion?" and examples[0]["labels"] == LABEL_SETS["mikels8"]
    assert examples[1]["image"].convert("RGB").getpixel((0, 0)) == (0, 0, 255)
    assert examples.skipped == 0 and "row 1" in examples[1]["source_row"]


def test_image_folder_one_subfolder_per_label(tmp_path):
    for label, color in [("joy", (255, 255, 0)), ("fear", (0, 0, 0))]:
        (tmp_path / "test" / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), color).save(tmp_path / "test" / label / f"{i}.jpg")
    (tmp_path / "test" / "joy" / "notes.txt").write_text("not an image")
    examples = load_examples(spec(source="imagefolder", path=str(tmp_path), split="test"))
    assert [e["answer"] for e in examples] == ["fear", "fear", "joy", "joy"]
    assert examples[0]["labels"] == ["fear", "joy"]  # no label set given: the folder names
    assert "fear, joy" in examples[0]["prompt"]


def test_jsonl_with_mapped_columns_and_relative_paths(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.png")
    (tmp_path / "d.jsonl").write_text(json.dumps({"file_name": "img/a.png", "emo": "Joy"}) + "\n")
    data = spec(
        source="jsonl",
        path=str(tmp_path / "d.jsonl"),
        labels="emotion6",
        columns={"image": "file_name", "answer": "emo"},
    )
    (example,) = load_examples(data)
    assert example["answer"] == "joy" and example["image"].size == (8, 8)


def test_csv_custom_labels_and_prompt(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    pd.DataFrame([{"image_path": "a.png", "label": "positive"}]).to_csv(tmp_path / "d.csv", index=False)
    data = spec(source="csv", path=str(tmp_path / "d.csv"), labels=["negative", "positive"], prompt="Mood? {labels}")
    (example,) = load_examples(data)
    assert example["prompt"] == "Mood? negative, positive" and example["answer"] == "positive"


def test_vqa_answers_choices_and_scoring(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rows = [
        {"image": "a.png", "question": "How many?", "answers": ["2", "two", "2", "3"]},
        {"image": "a.png", "question": "Which animal?", "choices": ["cat", "dog"], "answer": 1},
        {"image": "a.png", "question": "Is it dark?", "answer": "yes"},
    ]
    (tmp_path / "v.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = FileData(source="jsonl", path=str(tmp_path / "v.jsonl"), task="vqa")
    count, choice, yes_no = load_examples(data)
    assert count["answer"] == "2" and count["answers"] == ["2", "two", "2", "3"]
    assert choice["answer"] == "B" and "A. cat\nB. dog" in choice["prompt"]

    def bench(metric):
        return DatasetBenchmark(
            "v", 1, "retention", "general", "", spec=DatasetBenchmarkSpec(data=data), metric=metric
        )

    # Official VQA accuracy over the 4 leave-one-out subsets: "Two." matches 3 of 4 annotators ("2", "two", "2"),
    # so 3 subsets keep 2 matches (2/3) and one keeps 3 (1): 0.75. "3" matches one: 3 subsets at 1/3, one at 0: 0.25.
    assert bench("vqa_soft").score_one(count, "Two.")[1] == pytest.approx(0.75)
    assert bench("vqa_soft").score_one(count, "3")[1] == pytest.approx(0.25)
    assert bench("exact_match").score_one(count, "two") == ("two", True)
    assert bench("multiple_choice").score_one(choice, "It is a dog.") == ("B", True)
    assert bench("yes_no").score_one(yes_no, "Yes, it is.") == ("yes", True)


def test_prompts_go_through_the_family_chat_template(tmp_path):
    from tiny_families import BUILDERS

    from mllmtune.data.chat import ChatCollator, encode_prompts

    rows = [{"problem": "<image>Which emotion?", "answer": "joy", "images": [{"bytes": _png(), "path": None}]}]
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    examples = load_examples(spec(source="parquet", path=str(tmp_path / "d.parquet"), labels="emotion6"))
    _, processor = BUILDERS["qwen2_5_vl"]()
    enc = encode_prompts(processor, examples)
    text = processor.tokenizer.decode(enc["input_ids"][0])
    assert text.startswith("<|im_start|>user\n<|vision_start|><|image_pad|>") and "Which emotion?" in text
    assert text.endswith("<|im_start|>assistant\n") and "pixel_values" in enc and "image_grid_thw" in enc
    batch = ChatCollator(processor)(examples)
    answer = [t for t, lab in zip(batch["input_ids"][0], batch["labels"][0], strict=True) if lab != -100]
    assert processor.tokenizer.decode(answer) == "joy<|im_end|>\n"


def test_missing_mapped_column_names_column_columns_and_key(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"img": "a.png", "label": "joy"}) + "\n")
    with pytest.raises(UserError) as exc:
        load_examples(spec(source="jsonl", path=str(tmp_path / "d.jsonl"), columns={"image": "picture"}))
    msg = str(exc.value)
    assert "'picture'" in msg and "img, label" in msg and "data.columns.image" in msg and "\n" not in msg


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_corrupt_image_named_then_skipped_or_fatal(tmp_path, policy):
    Image.new("RGB", (8, 8)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    rows = [{"image": "good.png", "label": "joy"}, {"image": "bad.png", "label": "fear"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = spec(source="jsonl", path=str(tmp_path / "d.jsonl"), labels="emotion6", on_bad_image=policy)
    if policy == "fail":
        with pytest.raises(UserError, match=r"d\.jsonl row 1: unreadable image .*data\.on_bad_image: skip"):
            load_examples(data)
    else:
        examples = load_examples(data)
        assert len(examples) == 1 and examples.skipped == 1


def test_label_outside_the_set_names_the_row(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"label": "joy"}) + "\n" + json.dumps({"label": "meh"}) + "\n")
    with pytest.raises(UserError, match=r"d\.jsonl row 1: answer 'meh' is not one of data\.labels"):
        load_examples(spec(source="jsonl", path=str(tmp_path / "d.jsonl"), labels="emotion6"))


def test_recipe_with_file_data_and_declared_benchmarks_validates():
    recipe = validate(
        {
            "name": "r",
            "strategy": {"name": "lora"},
            "data": {"source": "parquet", "path": "/nowhere/emoset", "labels": "mikels8"},
            "eval": {
                "datasets": {
                    "src-okvqa": {"data": {"source": "hub", "path": "org/okvqa", "task": "vqa"}, "metric": "vqa_soft"}
                },
                "target": ["emoscenes-photo"],
                "retention": ["src-okvqa"],
            },
        },
        "r.yaml",
    )
    assert recipe.data.source == "parquet"
    with pytest.raises(UserError, match=r"r\.yaml: data\.columns\.picture: unknown key"):
        validate(
            {
                "name": "r",
                "strategy": {"name": "lora"},
                "data": {"source": "csv", "path": "x", "columns": {"picture": "a"}},
            },
            "r.yaml",
        )
    with pytest.raises(UserError, match="unknown benchmark 'okvqa'.*eval.datasets"):
        validate({"name": "r", "strategy": {"name": "lora"}, "eval": {"retention": ["okvqa"]}}, "r.yaml")


def test_eval_scores_a_recipes_declared_benchmark_by_name(micro_world, tmp_path):
    """`mllmtune eval --recipe R -b NAME` knows the benchmarks R declares; without the recipe, one line says how."""
    from typer.testing import CliRunner

    from mllmtune.cli import app

    Image.new("RGB", (16, 16), (250, 250, 250)).save(tmp_path / "white.png")
    rows = [{"image": "white.png", "question": f"Question {i}?", "answer": "yes" if i % 2 else "no"} for i in range(6)]
    (tmp_path / "yn.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "# mllmtune eval --recipe r.yaml\n"
        "name: r\nstrategy: {name: lora}\n"
        "eval:\n"
        "  datasets:\n"
        f"    my-yes-no: {{data: {{source: jsonl, path: {tmp_path / 'yn.jsonl'}, task: vqa}}, metric: yes_no}}\n"
        "  target: [emoscenes-photo]\n"
        "  retention: [my-yes-no]\n"
    )
    results = tmp_path / "results"
    out = CliRunner().invoke(app, ["eval", "--recipe", str(recipe), "-b", "my-yes-no", "--results", str(results)])
    assert out.exit_code == 0, out.output
    (record,) = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    assert list(record["scores"]) == ["my-yes-no@1"] and record["scores"]["my-yes-no@1"]["n"] == 6
    answers = [
        json.loads(line)
        for line in (results / "runs" / record["run_id"] / "predictions" / "my-yes-no@1.jsonl")
        .read_text()
        .splitlines()
    ]
    assert len(answers) == 6

    out = CliRunner().invoke(app, ["eval", "-b", "my-yes-no2", "--results", str(results)])
    assert out.exit_code == 2 and "unknown benchmark 'my-yes-no2'" in out.output and "--recipe" in out.output


def test_eval_without_model_or_recipe_scores_the_world(micro_world, tmp_path):
    """`mllmtune eval -b NAME` alone scores the embedded world's base, as its help says."""
    from typer.testing import CliRunner

    from mllmtune.cli import app

    results = tmp_path / "results"
    out = CliRunner().invoke(app, ["eval", "-b", "world-general", "--limit", "3", "--results", str(results)])
    assert out.exit_code == 0, out.output
    (record,) = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    assert record["model"]["id"] == "world" and list(record["scores"]) == ["world-general@2"]
