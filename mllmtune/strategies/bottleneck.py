"""Bottleneck (Houlsby) adapters after attention and MLP blocks, written by hand.

peft 0.21 has no classic bottleneck adapter for arbitrary models (its "adapter" methods are LLaMA-Adapter's
adaption prompts, LoRA relatives or parallel side networks), so this one is small and explicit: each chosen block
gets a child module `mllmtune_adapter` (down-projection, GELU, zero-initialised up-projection, residual) and a
forward hook that passes the block's output through it. The base model's own parameter names never change; the
adapter saves as a safetensors file of only its weights plus a JSON config, and loads onto a fresh base.
"""

from __future__ import annotations

import json
from pathlib import Path

ATTR = "mllmtune_adapter"
CONFIG = "bottleneck_config.json"
WEIGHTS = "bottleneck_model.safetensors"


def _module_class():
    import torch

    class Bottleneck(torch.nn.Module):
        """h + up(gelu(down(h))); `up` starts at zero so the adapted model starts as the base model."""

        def __init__(self, width: int, bottleneck: int):
            super().__init__()
            self.down = torch.nn.Linear(width, bottleneck)
            self.up = torch.nn.Linear(bottleneck, width)
            torch.nn.init.zeros_(self.up.weight)
            torch.nn.init.zeros_(self.up.bias)

        def forward(self, h):
            return h + self.up(torch.nn.functional.gelu(self.down(h.to(self.down.weight.dtype)))).to(h.dtype)

    return Bottleneck


def _hook(module, args, output):
    adapter = getattr(module, ATTR)
    if isinstance(output, tuple):  # attention blocks return (hidden, weights, ...)
        return (adapter(output[0]),) + tuple(output[1:])
    return adapter(output)


def output_width(block) -> int:
    """A block's output width: the out_features of its last dense layer (o_proj, fc2, down_proj, linear_2, ...)."""
    import torch

    linears = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError(f"{type(block).__name__} has no linear layer; cannot size a bottleneck adapter")
    return linears[-1].out_features


def attach(model, blocks: list[str], bottleneck: int, widths: dict[str, int] | None = None) -> dict[str, int]:
    """Add an adapter after each named block and freeze everything else; returns each block's width."""
    Bottleneck = _module_class()
    modules = dict(model.named_modules())
    widths = dict(widths or {})
    ref = next(model.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    for name in blocks:
        block = modules[name]
        widths.setdefault(name, output_width(block))
        dtype = ref.dtype if ref.is_floating_point() else None
        block.add_module(ATTR, Bottleneck(widths[name], bottleneck).to(device=ref.device, dtype=dtype))
        block.register_forward_hook(_hook)
    return widths


def adapter_state(model) -> dict:
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if f".{ATTR}." in k}


def save(model, directory: str | Path) -> None:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state(model), str(directory / WEIGHTS))
    (directory / CONFIG).write_text(json.dumps(model.mllmtune_bottleneck, indent=2))


def load(base_model, directory: str | Path, options=None):
    from safetensors.torch import load_file

    directory = Path(directory)
    config = json.loads((directory / CONFIG).read_text())
    attach(base_model, config["blocks"], config["bottleneck"], config["widths"])
    base_model.mllmtune_bottleneck = config
    state = load_file(str(directory / WEIGHTS), device=str(next(base_model.parameters()).device))
    missing = set(adapter_state(base_model)) - set(state)
    result = base_model.load_state_dict(state, strict=False)
    if missing or result.unexpected_keys:
        raise ValueError(f"bottleneck adapter in {directory} does not fit this model ({len(missing)} missing keys)")
    return base_model
