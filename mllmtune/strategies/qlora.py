"""QLoRA: the base reloaded in 4-bit NF4 through bitsandbytes, LoRA on top (peft)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mllmtune.errors import UserError
from mllmtune.strategies import targets
from mllmtune.strategies.registry import register
from mllmtune.strategies.reparam import LoraBase, check_linear, lora_config


class QLoraOptions(LoraBase):
    name: Literal["qlora"] = "qlora"
    double_quant: bool = Field(True, description="also quantize the quantization constants")


def fourbit_problem() -> str | None:
    """Why 4-bit NF4 cannot run here, or None: a tiny quantize/dequantize/matmul on the device training will use."""
    try:
        import bitsandbytes as bnb
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        w = torch.randn(64, 64, device=device)
        packed, state = bnb.functional.quantize_4bit(w, quant_type="nf4")
        out = bnb.matmul_4bit(torch.randn(2, 64, device=device), packed.t(), quant_state=state)
        if out.shape != (2, 64) or not torch.isfinite(out).all():
            return "4-bit matmul returned a wrong result"
        return None
    except Exception as exc:  # any failure means no usable kernel; the message says which
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


def _preflight(options: QLoraOptions) -> None:
    problem = fourbit_problem()
    if problem:
        raise UserError(
            f"strategy 'qlora' needs bitsandbytes 4-bit NF4 kernels, which are not available here ({problem}); "
            "install a bitsandbytes build for this device or use strategy 'lora'"
        )


def no_cpu_bf16_repack(model) -> None:
    """Keep 4-bit layers on bitsandbytes' fp32 dequantize-then-matmul path on CPU.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks 4-bit weights in place at the first no-grad eval forward
    and computes in bf16 from then on: evaluation would score a different function (~1e-3 logit drift) from the one
    training optimized and export merges, and the repacking fails outright on narrow layers (the micro world's
    32-wide vision tower). GPUs are unaffected.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def release_checkpoint(model) -> None:
    """Give the weights that stay in full precision their own memory, then hand freed heap back to the system (CPU).

    Loaded from an fp32 safetensors file, the unquantized weights (embeddings, norms, biases, head) are views of the
    file's memory map, and quantizing touched every page of that map: ~4 bytes per parameter of the whole model
    stayed resident for ~2% of the weights, and the quantization's freed buffers stayed in the allocator. Measured
    by `mllmtune perf` on a 150 M model: RSS after the 4-bit load fell from +960 MB to +105 MB over the imports.
    """
    import ctypes
    import ctypes.util
    import gc

    import torch

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dtype != torch.uint8:  # the packed 4-bit weights own their memory already
                tensor.data = tensor.data.clone()
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc and hasattr(ctypes.CDLL(libc), "malloc_trim"):  # glibc only
        ctypes.CDLL(libc).malloc_trim(0)


def quantization_config(options: QLoraOptions, dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=options.double_quant,
        bnb_4bit_compute_dtype=dtype,
    )


@register(
    "reparameterization",
    "LoRA on a 4-bit NF4 base (bitsandbytes + peft QLoRA).",
    QLoraOptions,
    preflight=_preflight,
    check=check_linear,
)
def qlora(bundle, options: QLoraOptions):
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForImageTextToText

    dtype = next(p.dtype for p in bundle.model.parameters() if p.is_floating_point())
    device = bundle.model.device
    # The base is reloaded quantized (quantization happens at load); the full-precision copy is dropped.
    model = AutoModelForImageTextToText.from_pretrained(
        bundle.path,
        quantization_config=quantization_config(options, dtype),
        dtype=dtype,
        device_map={"": str(device)},
    )
    if device.type == "cpu":
        no_cpu_bf16_repack(model)
        release_checkpoint(model)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    bundle.model = model
    return targets.wrap_peft(model, lora_config(bundle, options))
