"""`mllmtune ls strategies --model`: counts and memory from a config alone, on the meta device.

Expected values come from the published model cards (parameter totals) and from hand-worked formulas (LoRA's
r * (in + out) per adapted linear layer; bytes per parameter by dtype), never from the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mllmtune.cli import app

runner = CliRunner()
MODELS = Path(__file__).parent.parent / "configs" / "models"
# Totals the Hugging Face model pages print for the safetensors checkpoints ("Model size"):
# Qwen/Qwen2.5-VL-3B-Instruct 3.75 B, Qwen/Qwen2.5-VL-7B-Instruct 8.29 B, llava-hf/llava-1.5-7b-hf 7.06 B.
PUBLISHED = {"qwen2.5-vl-3b-instruct": 3.75e9, "qwen2.5-vl-7b-instruct": 8.29e9, "llava-1.5-7b": 7.06e9}


def _rows(model: str) -> dict[str, dict]:
    res = runner.invoke(app, ["ls", "strategies", "--model", model, "--json"])
    assert res.exit_code == 0, res.output
    return {r["name"]: r for r in json.loads(res.output[res.output.index("[") :])}


@pytest.fixture(scope="module")
def qwen3b():
    return _rows(str(MODELS / "qwen2.5-vl-3b-instruct.json"))


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if "3b" in n else pytest.mark.slow) for n in PUBLISHED])
def test_totals_match_the_published_sizes(name, request):
    rows = request.getfixturevalue("qwen3b") if "3b" in name else _rows(str(MODELS / f"{name}.json"))
    total = rows["full"]["total"]
    assert abs(total - PUBLISHED[name]) < 0.005e9, total  # the pages round to 0.01 B
    assert rows["full"]["trainable"] == total
    assert sum(g["total"] for g in rows["full"]["groups"].values()) == total


def test_lora_counts_by_hand(qwen3b):
    """Default LoRA (r 8) on every linear layer of the 36 language layers of Qwen2.5-VL-3B: hidden 2048, 2 key/value
    heads of 128, MLP 11008 (the config's published values). Per layer q, o: 2048->2048; k, v: 2048->256; gate, up:
    2048->11008; down: 11008->2048. An adapter adds r * (in + out)."""
    per_layer = 2 * (2048 + 2048) + 2 * (2048 + 256) + 3 * (2048 + 11008)
    expected = 36 * 8 * per_layer
    lora = qwen3b["lora"]
    assert lora["trainable"] == expected == lora["groups"]["language"]["trainable"]
    assert lora["groups"]["vision"]["trainable"] == 0 and lora["total"] == qwen3b["full"]["total"] + expected
    assert qwen3b["pissa"]["trainable"] == qwen3b["qlora"]["trainable"] == expected


def test_memory_by_dtype_by_hand(qwen3b):
    """Full tuning: weights, gradients and AdamW's two moments all in the weights' dtype (2 or 4 bytes each)."""
    total = qwen3b["full"]["total"]
    for dtype, size in (("bfloat16", 2), ("float32", 4)):
        mem = qwen3b["full"]["memory"][dtype]
        assert mem["params_gib"] == pytest.approx(total * size / 2**30, abs=1e-3)
        assert mem["grads_gib"] == pytest.approx(total * size / 2**30, abs=1e-3)
        assert mem["optimizer_gib"] == pytest.approx(2 * total * size / 2**30, abs=1e-3)
    # LoRA on bfloat16 weights: peft keeps the adapters in float32 (4 bytes), so gradients and moments are float32
    lora = qwen3b["lora"]
    assert lora["memory"]["bfloat16"]["grads_gib"] == pytest.approx(lora["trainable"] * 4 / 2**30, abs=1e-3)
    # QLoRA: far below the bfloat16 weights (4-bit linear layers), whatever the dtype
    assert (
        qwen3b["qlora"]["memory"]["bfloat16"]["params_gib"] < 0.5 * qwen3b["lora"]["memory"]["bfloat16"]["params_gib"]
    )


@pytest.mark.slow
def test_the_table_shows_groups_and_memory():
    res = runner.invoke(
        app, ["ls", "strategies", "--model", str(MODELS / "llava-1.5-7b.json")], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    assert "7.063 B parameters" in res.output and "bfloat16 GiB (p/g/o)" in res.output
    assert "vision 303.5 M" in res.output  # CLIP ViT-L/14 at 336 px


def test_an_uncached_hub_id_offline_asks_for_a_config_file(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    res = runner.invoke(app, ["ls", "strategies", "--model", "nobody-here/no-such-vlm"])
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1 and "config.json" in res.output, res.output
