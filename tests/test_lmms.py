"""The lmms-eval adapter on local task folders (parquet + yaml, offline) and the micro world's tiny model.

lmms-eval is installed by `make install`; a missing install fails here rather than skipping.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from PIL import Image, ImageDraw

from mllmtune.errors import UserError
from mllmtune.evaluation import lmms, lmms_lookup

COLORS = ["red", "blue", "green", "yellow"]
VQA_SCORE = {0: 0.0, 1: 0.3, 2: 0.6, 3: 0.9, 4: 1.0}  # official VQA: mean over the 10 leave-one-out min(1, k/3)


def _image(color: str, size: int = 32) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).rectangle([6, 6, size - 6, size - 6], fill=color)
    return image


def _parquet(path, rows: list[dict]) -> None:
    import datasets

    ds = datasets.Dataset.from_list(rows).cast_column("image", datasets.Image())
    ds.to_parquet(str(path))


def _write(folder, name: str, yaml: str, rows: list[dict], utils: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(textwrap.dedent(yaml))
    if utils is not None:
        (folder / "utils.py").write_text(textwrap.dedent(utils))
    _parquet(folder / "data.parquet", rows)


# POPE-style: lmms-eval's own POPE functions (referenced by module path), exact yes/no accuracy.
POPE_YAML = """\
    task: pope_local
    dataset_path: parquet
    dataset_kwargs:
      data_files:
        test: data.parquet
    test_split: test
    output_type: generate_until
    doc_to_visual: !function lmms_eval.tasks.pope.utils.pope_doc_to_visual
    doc_to_text: !function lmms_eval.tasks.pope.utils.pope_doc_to_text
    doc_to_target: answer
    generation_kwargs:
      max_new_tokens: 6
      until: ["\\n"]
    process_results: !function lmms_eval.tasks.pope.utils.pope_process_results
    metric_list:
      - metric: pope_accuracy
        aggregation: !function lmms_eval.tasks.pope.utils.pope_aggregate_accuracy
        higher_is_better: true
      - metric: pope_yes_ratio
        aggregation: !function lmms_eval.tasks.pope.utils.pope_aggregate_yes_ratio
        higher_is_better: true
    lmms_eval_specific_kwargs:
      default:
        pre_prompt: ""
        post_prompt: ""
    metadata:
      - version: 0.0
"""

# VQA with ten answers: a utils.py beside the yaml, scoring with lmms-eval's TextVQA process_results.
VQA_YAML = """\
    task: vqa_local
    dataset_path: parquet
    dataset_kwargs:
      data_files:
        validation: data.parquet
    validation_split: validation
    output_type: generate_until
    doc_to_visual: !function utils.doc_to_visual
    doc_to_text: !function utils.doc_to_text
    doc_to_target: answer
    generation_kwargs:
      max_new_tokens: 6
      until: ["\\n"]
    process_results: !function utils.process_results
    metric_list:
      - metric: exact_match
        aggregation: mean
        higher_is_better: true
"""
VQA_UTILS = """\
    from lmms_eval.tasks.textvqa.utils import textvqa_process_results as process_results  # noqa: F401


    def doc_to_visual(doc):
        return [doc["image"].convert("RGB")]


    def doc_to_text(doc, lmms_eval_specific_kwargs=None):
        return doc["question"]
"""

MC_YAML = """\
    task: mc_local
    dataset_path: parquet
    dataset_kwargs:
      data_files:
        test: data.parquet
    test_split: test
    output_type: multiple_choice
    doc_to_visual: !function utils.doc_to_visual
    doc_to_text: question
    doc_to_choice: ["yes", "no"]
    doc_to_target: label
    metric_list:
      - metric: acc
        aggregation: mean
        higher_is_better: true
"""
MC_UTILS = """\
    def doc_to_visual(doc):
        return [doc["image"].convert("RGB")]
"""


def _pope_rows(n: int = 12) -> list[dict]:
    rows = []
    for i in range(n):
        shown, asked = COLORS[i % 4], COLORS[(i // 2) % 4]
        answer = "yes" if shown == asked else "no"
        rows.append(
            {
                "question_id": f"q{i:03d}",
                "question": f"Is there a {asked} square?",
                "answer": answer,
                "image": _image(shown),
            }
        )
    return rows


def _vqa_rows(answers: list[list[str]]) -> list[dict]:
    return [
        {
            "question_id": 100 + i,
            "question": "What color is the square?",
            "answer": a[0],
            "answers": a,
            "image": _image(COLORS[i % 4]),
        }
        for i, a in enumerate(answers)
    ]


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms-tasks")
    _write(root / "pope", "pope_local", POPE_YAML, _pope_rows())
    _write(root / "vqa", "vqa_local", VQA_YAML, _vqa_rows([["red"] * 10] * 5), VQA_UTILS)
    mc = [dict(r, label=0 if r["answer"] == "yes" else 1) for r in _pope_rows(4)]
    _write(root / "mc", "mc_local", MC_YAML, mc, MC_UTILS)
    return root


@pytest.fixture(scope="module")
def model(micro_world):
    """The tiny world model, loaded once for the module (what conftest's `bundle` loads per test). The micro model,
    barely pretrained, ends its answers at once; one forced token makes its (greedy) outputs non-empty."""
    from mllmtune.models.bundle import load_bundle

    bundle = load_bundle("world")
    bundle.model.generation_config.min_new_tokens = 1
    return bundle


@pytest.fixture(scope="module")
def pope(model, tasks):
    return lmms.evaluate_tasks(
        model.model, model.processor, ["lmms:pope_local"], limit=None, batch_size=4, include_path=str(tasks)
    )


def _check_shape(scores, predictions, key: str, n: int) -> list[dict]:
    assert list(scores) == list(predictions) == [key]
    rows = predictions[key]
    assert len(rows) == n and scores[key]["n"] == float(n)
    for row in rows:
        assert set(row) == {"id", "index", "answer", "output", "pred", "correct"}
        assert isinstance(row["id"], str) and isinstance(row["index"], int) and isinstance(row["output"], str)
        assert 0.0 <= row["correct"] <= 1.0
    assert [r["index"] for r in rows] == sorted(r["index"] for r in rows)  # doc order
    assert scores[key]["accuracy"] == pytest.approx(100 * sum(r["correct"] for r in rows) / n)
    return rows


def test_pope_scores_and_rows(pope):
    scores, predictions = pope
    rows = _check_shape(scores, predictions, "lmms:pope_local@0.0", 12)
    assert any(r["output"] for r in rows)
    assert [r["id"] for r in rows] == [f"q{i:03d}" for i in range(12)]  # the doc's own question_id
    for row in rows:  # lmms-eval's POPE: exact match of the lower-cased, stripped answer
        assert row["correct"] == float(row["pred"].lower() == row["answer"])
        assert "\n" not in row["output"]  # cut at the task's `until`
    assert scores["lmms:pope_local@0.0"]["pope_accuracy"] == pytest.approx(
        scores["lmms:pope_local@0.0"]["accuracy"] / 100
    )
    assert scores["lmms:pope_local@0.0"]["pope_yes_ratio"] == pytest.approx(
        sum(r["answer"] == "yes" for r in rows) / 12
    )


def test_vqa_soft_accuracy_hand_worked():
    from lmms_eval.tasks.textvqa.utils import textvqa_process_results

    for k, expected in VQA_SCORE.items():
        answers = ["two"] * k + [f"other{j}" for j in range(10 - k)]
        got = textvqa_process_results({"question_id": 1, "answers": answers}, ["Two."])["exact_match"]
        assert got == pytest.approx(expected)


def test_vqa_end_to_end_counts(model, tasks):
    """The model's (deterministic) answer planted 0-4 times among ten answers scores 0, .3, .6, .9, 1 per item."""
    run = dict(limit=None, batch_size=4, include_path=str(tasks))
    _, first = lmms.evaluate_tasks(model.model, model.processor, ["vqa_local"], **run)
    outputs = [r["output"] for r in first["lmms:vqa_local@1"]]
    assert all(outputs)
    before = lmms.task_fingerprint("vqa_local", str(tasks))
    answers = [[out] * k + [f"zz{j}" for j in range(10 - k)] for k, out in zip(VQA_SCORE, outputs, strict=True)]
    _parquet(tasks / "vqa" / "data.parquet", _vqa_rows(answers))
    assert lmms.task_fingerprint("vqa_local", str(tasks)) != before
    scores, predictions = lmms.evaluate_tasks(model.model, model.processor, ["lmms:vqa_local"], **run)
    rows = _check_shape(scores, predictions, "lmms:vqa_local@1", 5)
    assert [r["output"] for r in rows] == outputs
    assert [r["correct"] for r in rows] == pytest.approx(list(VQA_SCORE.values()))
    assert [r["id"] for r in rows] == [str(100 + i) for i in range(5)]
    assert scores["lmms:vqa_local@1"]["exact_match"] == pytest.approx(sum(VQA_SCORE.values()) / 5)


def test_multiple_choice_picks_lowest_nll(model, tasks):
    import torch

    from mllmtune.data.chat import ChatCollator

    scores, predictions = lmms.evaluate_tasks(
        model.model, model.processor, ["lmms:mc_local"], limit=None, batch_size=3, include_path=str(tasks)
    )
    rows = _check_shape(scores, predictions, "lmms:mc_local@1", 4)
    collate = ChatCollator(model.processor)
    for row, doc in zip(rows, _pope_rows(4), strict=True):
        nll = []
        for choice in ("yes", "no"):
            batch = collate([{"prompt": doc["question"], "image": doc["image"], "answer": choice}])
            with torch.no_grad():
                logits = model.model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0, :-1].float()
            nll.append(float(torch.nn.functional.cross_entropy(logits, batch["labels"][0, 1:], reduction="sum")))
        assert row["output"] == ("yes", "no")[nll.index(min(nll))]
        assert row["correct"] == float(row["output"] == row["answer"])


def test_limit_is_a_stable_seeded_sample(model, tasks, pope):
    run = dict(limit=5, batch_size=5, include_path=str(tasks))
    a = lmms.evaluate_tasks(model.model, model.processor, ["lmms:pope_local"], **run)[1]["lmms:pope_local@0.0"]
    b = lmms.evaluate_tasks(model.model, model.processor, ["lmms:pope_local"], **run)[1]["lmms:pope_local@0.0"]
    assert [r["id"] for r in a] == [r["id"] for r in b] and len(a) == 5
    assert [r["index"] for r in a] != list(range(5))
    full = {r["id"]: r for r in pope[1]["lmms:pope_local@0.0"]}
    assert all(full[r["id"]]["index"] == r["index"] for r in a)


class _Progress:
    def __init__(self):
        self.total, self.done, self.removed = None, 0, False

    def add_task(self, description, total):
        self.total = total
        return 7

    def advance(self, task_id, n):
        assert task_id == 7
        self.done += n

    def remove_task(self, task_id):
        self.removed = True


def test_single_process_progress_and_clean_state(model, tasks, monkeypatch):
    """Under a multi-process launch only the main process scores: lmms-eval must not see WORLD_SIZE, and it leaves
    the environment, the RNGs, the warning filters and the model as they were."""
    import random
    import warnings

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    random.seed(123)
    expected = random.random()
    random.seed(123)
    filters = list(warnings.filters)
    progress = _Progress()
    scores, _ = lmms.evaluate_tasks(
        model.model,
        model.processor,
        ["pope_local", "mc_local"],
        limit=3,
        batch_size=2,
        include_path=str(tasks),
        progress=progress,
    )
    assert sorted(scores) == ["lmms:mc_local@1", "lmms:pope_local@0.0"]
    assert progress.total == progress.done == 3 + 3 * 2 and progress.removed  # two choices per multiple-choice doc
    assert (os.environ["WORLD_SIZE"], random.random()) == ("2", expected)
    assert warnings.filters == filters
    lm = lmms._adapter()(model.model, model.processor, 2, None)
    lm.clean()
    assert lm.model is model.model


def test_fingerprint_is_stable(tasks):
    first = lmms.task_fingerprint("lmms:pope_local", str(tasks))
    assert first == lmms.task_fingerprint("pope_local", str(tasks)) and len(first) == 12
    assert first != lmms.task_fingerprint("mc_local", str(tasks))


def test_unknown_task_names_close_matches(tasks):
    with pytest.raises(UserError, match=r"lmms:pope_locl: unknown lmms-eval task; close matches: .*lmms:pope_local"):
        lmms.check_tasks(["lmms:pope_locl"], str(tasks))


def test_missing_data_file(tasks, tmp_path):
    (tmp_path / "gone.yaml").write_text(
        POPE_YAML.replace("data.parquet", "/nonexistent/data.parquet").replace("pope_local", "gone")
    )
    with pytest.raises(UserError, match="lmms:gone: data file /nonexistent/data.parquet not found"):
        lmms.check_tasks(["gone"], str(tmp_path))


def test_hub_task_offline_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "hub.yaml").write_text("task: hub_task\ndataset_path: someone/some-vqa\ntest_split: test\n")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="lmms:hub_task: .*offline.*eval.lmms_include_path") as err:
        lmms.check_tasks(["lmms:hub_task"], str(tmp_path))
    assert "\n" not in str(err.value)


def test_local_copy_shadows_the_hub_task(model, tasks, tmp_path, monkeypatch):
    """`lmms:pope` offline: a local task folder defining `pope` is what runs (lmms-eval itself lets its own win)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="lmms:pope: .*offline"):
        lmms.check_tasks(["lmms:pope"], None)
    data = tasks / "pope" / "data.parquet"
    (tmp_path / "pope.yaml").write_text(
        textwrap.dedent(POPE_YAML).replace("pope_local", "pope").replace("data.parquet", str(data))
    )
    lmms.check_tasks(["lmms:pope"], str(tmp_path))
    scores, _ = lmms.evaluate_tasks(
        model.model, model.processor, ["lmms:pope"], limit=2, batch_size=2, include_path=str(tmp_path)
    )
    assert list(scores) == ["lmms:pope@0.0"] and scores["lmms:pope@0.0"]["n"] == 2.0


def test_missing_install_gives_the_command(monkeypatch, tasks):
    monkeypatch.setitem(sys.modules, "lmms_eval", None)
    with pytest.raises(UserError, match=r"lmms-eval is not installed.*pip install --no-deps lmms-eval==0\.7\.3"):
        lmms.check_tasks(["lmms:pope_local"], str(tasks))


def test_cli_import_path_does_not_load_lmms_eval():
    code = (
        "import sys, mllmtune.cli, mllmtune.evaluation.lmms, mllmtune.evaluation.lmms_lookup; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lmms_eval', 'loguru')]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_leaves_warnings_and_stdout_alone(capfd):
    import warnings

    before = list(warnings.filters)
    lmms_lookup.load()
    assert warnings.filters == before
    from loguru import logger

    logger.warning("from lmms-eval")
    out, err = capfd.readouterr()
    assert "from lmms-eval" not in out and "from lmms-eval" in err
