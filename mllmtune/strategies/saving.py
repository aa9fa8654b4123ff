"""Save a tuned model into its run folder and load it back, whatever the strategy made of it.

Three formats, recorded in `mllmtune_model.json` beside the weights: `hf` (a complete Hugging Face model, for
strategies that only choose which base weights train), `peft` (a peft adapter over the base named in the manifest,
quantized again on load when the run was), and `custom` (a hand-written method's own `save`/`load` hooks).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

MANIFEST = "mllmtune_model.json"


def _dtype_name(model) -> str:
    for p in model.parameters():
        if p.is_floating_point():
            return str(p.dtype).removeprefix("torch.")
    return "float32"


def save_tuned(model, bundle, strategy, options, directory: str | Path) -> Path:
    """Write `model` (as returned by the strategy and trained by the stage) to `directory`; returns it."""
    from peft import PeftModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    base_model = model.get_base_model() if isinstance(model, PeftModel) else model
    quant = getattr(base_model.config, "quantization_config", None)
    if isinstance(model, PeftModel):
        fmt = "peft"
        (strategy.save or (lambda m, d: m.save_pretrained(str(d))))(model, directory)
    elif strategy.save is not None:
        fmt = "custom"
        strategy.save(model, directory)
    else:
        fmt = "hf"
        model.save_pretrained(str(directory))
        bundle.processor.save_pretrained(str(directory))
    manifest = {
        "format": fmt,
        "strategy": strategy.name,
        "family": strategy.family,
        "options": options.model_dump(mode="json"),
        "base": {"path": bundle.path, "model_id": bundle.model_id, "revision": bundle.revision},
        "dtype": _dtype_name(base_model),
        "quantization": quant.to_dict() if hasattr(quant, "to_dict") else quant,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return directory


def read_manifest(directory: str | Path) -> dict:
    from mllmtune.errors import UserError

    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise UserError(f"{directory} holds no saved tuned model ({MANIFEST} is missing)")
    return json.loads(path.read_text())


def load_base(manifest: dict, dequantize: bool = False):
    """The base model the manifest names, quantized as in training unless `dequantize` (then fp weights as trained)."""
    import torch
    from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

    path = manifest["base"]["path"]
    kwargs = {"dtype": getattr(torch, manifest["dtype"])}
    revision = manifest["base"].get("revision")
    if revision and not os.path.isdir(path):
        kwargs["revision"] = revision
    if manifest.get("quantization"):
        from mllmtune.strategies.qlora import no_cpu_bf16_repack

        config = BitsAndBytesConfig.from_dict(dict(manifest["quantization"]))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = AutoModelForImageTextToText.from_pretrained(
            path, quantization_config=config, device_map={"": device}, **kwargs
        )
        if dequantize:
            return model.dequantize()
        if device == "cpu":
            no_cpu_bf16_repack(model)
        return model
    return AutoModelForImageTextToText.from_pretrained(path, **kwargs)


def load_tuned(directory: str | Path, dequantize: bool = False):
    """(model, processor, manifest) of a saved tuned model, ready to evaluate, train further or merge."""
    import torch
    from transformers import AutoModelForImageTextToText

    from mllmtune import strategies
    from mllmtune.models.bundle import processor_at

    directory = Path(directory)
    manifest = read_manifest(directory)
    strategy = strategies.get(manifest["strategy"])
    options = strategy.options.model_validate(manifest["options"])
    if manifest["format"] == "hf":
        model = AutoModelForImageTextToText.from_pretrained(str(directory), dtype=getattr(torch, manifest["dtype"]))
        return model, processor_at(directory), manifest
    base = load_base(manifest, dequantize=dequantize)
    if strategy.load is not None:
        model = strategy.load(base, directory, options)
    else:
        import warnings

        from peft import PeftModel

        with warnings.catch_warnings():  # peft warns on every non-linear target (ln-tuning's norms); harmless
            warnings.filterwarnings("ignore", message="Unsupported layer type")
            model = PeftModel.from_pretrained(base, str(directory))
    return model, processor_at(manifest["base"]["path"]), manifest
