"""Real model families through the public CLI: tiny random models saved in the Hugging Face format, given as paths.

For each family: its module groups are found, one SFT step runs with `lora` and with `freeze` on a JSONL data set,
and the declared dataset-backed benchmarks are scored before and after.
"""

from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image
from tiny_families import BUILDERS, save_tiny
from typer.testing import CliRunner

from mllmtune.cli import app

runner = CliRunner()
FAMILIES = list(BUILDERS)
EMOTION6 = ["anger", "disgust", "fear", "joy", "sadness", "surprise"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A JSONL emotion set (train and test) and a JSONL VQA set, with small PNG images beside them."""
    root = tmp_path_factory.mktemp("data")
    (root / "img").mkdir()
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (90, 0, 0), (0, 90, 0), (250, 0, 0)]
    for i, color in enumerate(colors):
        Image.new("RGB", (40, 30), color).save(root / "img" / f"{i}.png")
    emotions = [{"image": f"img/{i}.png", "label": EMOTION6[i % 4]} for i in range(6)]
    vqa = [  # images of their own: a test set that shares a training image is refused
        {"image": "img/6.png", "question": "What color is it?", "answers": ["red"] * 7 + ["dark red"] * 3},
        {"image": "img/5.png", "question": "Is it green?", "answers": ["yes"] * 10},
    ]
    for name, rows in [("train.jsonl", emotions[:4]), ("test.jsonl", emotions[4:]), ("vqa.jsonl", vqa)]:
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module", params=FAMILIES)
def tiny_model(request, tmp_path_factory):
    return request.param, save_tiny(request.param, tmp_path_factory.mktemp(request.param))


def _recipe(tmp_path, model_dir, data_dir, strategy: dict) -> str:
    recipe = {
        "name": f"tiny-{strategy['name']}",
        "model": {"id": str(model_dir)},
        "data": {"source": "jsonl", "path": str(data_dir / "train.jsonl"), "labels": "emotion6"},
        "strategy": strategy,
        # no warm-up: under the default one, the only step would run at learning rate 0 and change nothing
        "stage": {
            "name": "sft",
            "max_steps": 1,
            "batch_size": 2,
            "logging_steps": 1,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.0,
        },
        "eval": {
            "datasets": {
                "tiny-emotion": {  # a random model may never stop: 16 tokens, not the reasoning budget
                    "data": {"source": "jsonl", "path": str(data_dir / "test.jsonl"), "labels": "emotion6"},
                    "max_new_tokens": 16,
                },
                "tiny-vqa": {
                    "data": {"source": "jsonl", "path": str(data_dir / "vqa.jsonl"), "task": "vqa"},
                    "metric": "vqa_soft",
                },
            },
            "target": ["tiny-emotion"],
            "retention": ["tiny-vqa"],
            "limit": 2,
            "batch_size": 2,
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(f"# mllmtune train --recipe {path}\n" + yaml.safe_dump(recipe))
    return str(path)


def test_groups_found(tiny_model):
    from mllmtune.models.bundle import load_bundle

    family, path = tiny_model
    bundle = load_bundle(str(path))
    assert bundle.family == family
    names = [n for n, _ in bundle.model.named_parameters()]
    assert [n for n in names if bundle.group_of(n) is None] == []  # every parameter belongs to a group
    found = {bundle.group_of(n) for n in names}
    assert {"vision", "projector", "language"} <= found
    # a head tied to the embeddings (Gemma 3 and 4) holds no parameter of its own
    tied = bundle.model.get_output_embeddings().weight is bundle.model.get_input_embeddings().weight
    assert ("lm_head" in found) == (not tied)
    assert bundle.num_language_layers() == 2


def test_ls_strategies_on_a_family(tiny_model):
    family, path = tiny_model
    res = runner.invoke(app, ["ls", "strategies", "--model", str(path), "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output[res.output.index("[") :])}
    for name in ("freeze", "lora", "ln-tuning", "ia3"):
        assert 0 < rows[name]["trainable"] < rows[name]["total"], (name, rows[name])


@pytest.mark.parametrize(
    "strategy",
    [
        {"name": "lora", "groups": ["language"], "r": 4, "alpha": 8},
        {"name": "freeze", "groups": ["vision", "projector"]},
    ],
    ids=["lora", "freeze"],
)
def test_one_sft_step_and_evaluation(tiny_model, data_dir, tmp_path, strategy):
    family, path = tiny_model
    results = tmp_path / "results"
    recipe = _recipe(tmp_path, path, data_dir, strategy)
    res = runner.invoke(app, ["train", "--recipe", recipe, "--results", str(results)])
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["zero-shot", "sft"]
    run = records[-1]
    assert run["status"] == "success" and run["model"]["family"] == family
    assert 0 < run["trainable_params"] < run["total_params"]
    assert run["train"]["steps"] == 1 and run["train"]["skipped_images"] == 0
    assert set(run["scores"]) == {"tiny-emotion@1", "tiny-vqa@1"}
    assert run["scores"]["tiny-emotion@1"]["n"] == 2 and "macro_f1" in run["scores"]["tiny-emotion@1"]
    assert "answer_nll" in run["scores"]["tiny-vqa@1"]


def test_eval_world_benchmark_on_a_family(tiny_model, micro_world, tmp_path):
    family, path = tiny_model
    args = ["eval", "--model", str(path), "-b", "emoscenes-art", "--limit", "2", "--results", str(tmp_path / "r")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "r" / "runs.jsonl").read_text().splitlines()[0])
    assert record["model"]["family"] == family and record["scores"]["emoscenes-art@1"]["n"] == 2


def test_a_model_that_is_no_vision_language_model_is_refused_in_one_line(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(
        tmp_path
    )
    res = runner.invoke(app, ["eval", "--model", str(tmp_path), "--results", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "'llama' is not supported: transformers has no image-text-to-text model for it" in res.output


def test_uncached_hub_model_offline_says_how_to_point_at_a_copy(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import; no network retries
    res = runner.invoke(app, ["eval", "--model", "nobody-here/no-such-vlm", "--results", str(tmp_path / "r")])
    assert res.exit_code == 2 and "not in the Hugging Face cache" in res.output and "model.id" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_export_of_a_lora_run_loads_as_a_plain_model(tiny_model, data_dir, tmp_path):
    """The merged export is a standard model folder with its processor (Qwen's without torchvision here)."""
    from mllmtune.models.bundle import load_bundle

    family, path = tiny_model
    results = tmp_path / "results"
    recipe = _recipe(tmp_path, path, data_dir, {"name": "lora", "groups": ["language"], "r": 4, "alpha": 8})
    assert runner.invoke(app, ["train", "--recipe", recipe, "--results", str(results)]).exit_code == 0
    run_id = json.loads((results / "runs.jsonl").read_text().splitlines()[-1])["run_id"]
    res = runner.invoke(app, ["export", run_id, "--results", str(results), "--out", str(tmp_path / "export")])
    assert res.exit_code == 0, res.output
    bundle = load_bundle(str(tmp_path / "export"))
    assert bundle.family == family and not any("lora" in n for n, _ in bundle.model.named_parameters())
    # the export computes what the run trained, which is not the base
    import torch

    from mllmtune.data.chat import ChatCollator
    from mllmtune.runs.export import find_run_model
    from mllmtune.strategies.saving import load_tuned

    tuned, processor, _ = load_tuned(find_run_model(results, run_id))
    batch = ChatCollator(processor)(
        [{"prompt": "What is shown?", "answer": "a cat", "image": Image.new("RGB", (40, 40))}]
    )
    batch.pop("labels")
    with torch.no_grad():
        out = {name: m.eval()(**batch).logits for name, m in (("tuned", tuned), ("export", bundle.model))}
        out["base"] = load_bundle(str(path)).model.eval()(**batch).logits
    assert (out["export"] - out["tuned"]).abs().max().item() < 1e-4
    assert (out["export"] - out["base"]).abs().max().item() > 1e-6


def test_one_grpo_step_with_reflection(tiny_model, data_dir, tmp_path, monkeypatch):
    """EMO-R3 on each family: rollouts, the two reflective queries to the policy, one optimizer step, evaluation.

    A random model almost never writes the template's steps; as released, such a completion is still asked ("Answer
    'None'"), so the policy answers both kinds of query through the family's processor (coherence: text only;
    consistency: with the image)."""
    from mllmtune.emo_r3 import rewards

    asked: list[tuple[bool, str]] = []
    real_asker = rewards.policy_asker

    def recording_asker(*args, **kwargs):
        ask = real_asker(*args, **kwargs)

        def recorded(queries):
            replies = ask(queries)
            asked.extend((q["image"] is not None, r) for q, r in zip(queries, replies, strict=True))
            return replies

        return recorded

    monkeypatch.setattr(rewards, "policy_asker", recording_asker)
    family, path = tiny_model
    results = tmp_path / "results"
    recipe = _recipe(tmp_path, path, data_dir, {"name": "lora", "groups": ["language"], "r": 4, "alpha": 8})
    grpo = "stage={name: grpo, max_steps: 1, batch_size: 4, num_generations: 2, max_completion_length: 8, "
    grpo += "warmup_ratio: 0}"
    res = runner.invoke(app, ["train", "--recipe", recipe, "--results", str(results), "--set", grpo])
    if family == "llama4":  # TRL cannot roll it out (mllmtune/stages/grpo.py: UNSUPPORTED): refused before scoring
        assert res.exit_code == 2 and "'llama4' cannot run GRPO yet" in res.output, res.output
        assert not (results / "runs.jsonl").exists()
        return
    assert res.exit_code == 0, res.output
    run = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()][-1]
    assert run["status"] == "success" and run["stage"] == "grpo" and run["model"]["family"] == family
    assert run["train"]["steps"] == 1
    assert {"accuracy_reward", "format_reward", "coherence_reward", "consistency_reward"} <= set(
        run["train"]["rewards"]
    )
    assert set(run["scores"]) == {"tiny-emotion/emo-r3-r2@1", "tiny-vqa@1"}
    assert {has_image for has_image, _ in asked} == {False, True}  # coherence and consistency both reached it
    assert all(isinstance(reply, str) for _, reply in asked)
