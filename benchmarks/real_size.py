"""One LoRA SFT step and one GRPO step of a paper's model at its real size, through `mllmtune train`.

The model is built from its published config (`configs/models/NAME.json`) with random weights in bfloat16 and saved
as a Hugging Face model folder, so nothing is downloaded; its tokenizer is a byte-level stand-in that keeps the
published special-token ids (Qwen's `<|im_start|>` 151644, `<|image_pad|>` 151655, ...), so the config is used
unchanged. The images go through Qwen2-VL's PIL image processor with its published settings. Each stage then runs as
a user runs it: `mllmtune train --recipe R.yaml` (LoRA r 8 on the language model, batch 1, one step; GRPO with two
completions of 8 tokens and the EMO-R3 rewards), with one item scored before and after.

    python benchmarks/real_size.py                      # Qwen2.5-VL-3B-Instruct
    python benchmarks/real_size.py --model qwen2.5-vl-7b-instruct --stages sft

It prints, per stage, the training time of the step (the trainer's own `train_runtime`), the whole command's wall
time and the process's peak resident memory, and writes them to OUT/real_size-DTYPE.json. For the 3B: about 8 GB of
disk; in float32 on CPU the SFT step peaked at 18.4 GiB and the GRPO step went past 24 GiB (docs/real-size.md).

On a CPU without bf16 instructions (no AVX512-BF16 or AMX) torch multiplies bfloat16 matrices with its reference
kernel, a hundred times slower than float32: use `--dtype float32` there (figures in docs/real-size.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Qwen2.5's special tokens at their published ids (tokenizer_config.json of Qwen/Qwen2.5-VL-3B-Instruct,
# `added_tokens_decoder`), the first at 151643 right after the byte-level vocabulary.
QWEN_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
QWEN_TEMPLATE = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LABELS = ["anger", "disgust", "fear", "joy", "sadness", "surprise"]


def qwen_tokenizer():
    """Byte-level BPE with no merges (each byte one token), padded to Qwen's 151643 regular ids, then the specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({f"\u0100unused{i}": i for i in range(len(vocab), 151643)})  # never produced: no merges
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(QWEN_SPECIAL)  # in order, from 151643
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    assert fast.convert_tokens_to_ids("<|image_pad|>") == 151655, "special-token ids drifted"
    return fast


def build(name: str, folder: Path) -> Path:
    """The model folder: published config, random bfloat16 weights, the stand-in tokenizer, the PIL image processor."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from mllmtune.models.bundle import image_only_class

    if (folder / "model.safetensors.index.json").is_file() or (folder / "model.safetensors").is_file():
        return folder
    config = AutoConfig.from_pretrained(str(ROOT / "configs" / "models" / f"{name}.json"))
    if config.model_type != "qwen2_5_vl":
        raise SystemExit(f"{name}: only Qwen2.5-VL configs have a stand-in tokenizer here")
    start = time.time()
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    print(f"built {name} with random weights in {time.time() - start:.0f} s", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    del model
    # preprocessor_config.json of Qwen/Qwen2.5-VL-3B-Instruct: min_pixels 3136, max_pixels 12845056, patch 14,
    # merge 2, temporal patch 2 (the class defaults), OpenAI CLIP mean and std
    image_processor = Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=12845056)
    processor = image_only_class("qwen2_5_vl")(
        image_processor=image_processor, tokenizer=qwen_tokenizer(), chat_template=QWEN_TEMPLATE
    )
    processor.save_pretrained(str(folder))
    return folder


def data(folder: Path) -> Path:
    from PIL import Image

    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, label in enumerate(LABELS[:4]):
        Image.new("RGB", (112, 112), (60 * i, 200 - 40 * i, 90)).save(folder / "img" / f"{i}.png")
        rows.append({"image": f"img/{i}.png", "label": label})
    for split, part in (("train", rows[:2]), ("test", rows[2:])):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    vqa = {"image": "img/3.png", "question": "Is it green?", "answers": ["yes"] * 10}
    (folder / "vqa.jsonl").write_text(json.dumps(vqa) + "\n")
    return folder


def recipe(out: Path, model: Path, data_dir: Path, stage: str, dtype: str) -> Path:
    import yaml

    stages = {
        "sft": {"name": "sft", "max_steps": 1, "batch_size": 1, "warmup_ratio": 0.0, "logging_steps": 1},
        "grpo": {"name": "grpo", "max_steps": 1, "batch_size": 2, "num_generations": 2, "max_completion_length": 8,
                 "warmup_ratio": 0.0, "logging_steps": 1},
    }  # fmt: skip
    spec = {
        "name": f"real-size-{stage}-{dtype}",
        "model": {"id": str(model), "dtype": dtype},
        "data": {"source": "jsonl", "path": str(data_dir / "train.jsonl"), "labels": "emotion6"},
        "strategy": {"name": "lora", "groups": ["language"], "r": 8, "alpha": 16},
        "stage": stages[stage],
        "eval": {
            "datasets": {
                "tiny-emotion": {"data": {"source": "jsonl", "path": str(data_dir / "test.jsonl"),
                                          "labels": "emotion6"}},
                "tiny-vqa": {"data": {"source": "jsonl", "path": str(data_dir / "vqa.jsonl"), "task": "vqa"},
                             "metric": "vqa_soft"},
            },
            "target": ["tiny-emotion"],
            "retention": ["tiny-vqa"],
            "also": [],
            "template": "plain",  # one short answer per item: the scores are not the point here
            "limit": 1,
            "batch_size": 1,
        },
    }  # fmt: skip
    path = out / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="qwen2.5-vl-3b-instruct", help="a config name under configs/models")
    parser.add_argument("--stages", default="sft,grpo")
    parser.add_argument(
        "--dtype", default="bfloat16", help="the weights' dtype in training (the folder holds bfloat16 weights)"
    )
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mllmtune" / "real-size")
    parser.add_argument("--out", type=Path, default=Path("results-real-size"))
    args = parser.parse_args()
    model = build(args.model, args.cache / args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = data(args.out / "data")
    figures = []
    for stage in args.stages.split(","):
        path = recipe(args.out, model, data_dir, stage, args.dtype)
        start = time.time()
        cmd = [sys.executable, "-m", "mllmtune", "train", "--recipe", str(path), "--results", str(args.out / "runs")]
        done = subprocess.run(cmd, check=False)
        wall = time.time() - start
        records = [json.loads(line) for line in (args.out / "runs" / "runs.jsonl").read_text().splitlines()]
        run = next((r for r in reversed(records) if r.get("stage") == stage), None)
        if done.returncode != 0 or run is None or run.get("status") != "success":
            raise SystemExit(f"{stage}: mllmtune train failed (exit {done.returncode})")
        train = run.get("train", {})
        figures.append({
            "model": args.model, "dtype": args.dtype, "stage": stage, "steps": train.get("steps"),
            "step_s": train.get("train_runtime_s"), "command_s": round(wall, 1),
            "peak_rss_gib": round(run["peak_mem_mb"] / 1024, 2), "trainable": run.get("trainable_params"),
            "total": run.get("total_params"),
        })  # fmt: skip
        print(json.dumps(figures[-1]), flush=True)
    (args.out / f"real_size-{args.dtype}.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
