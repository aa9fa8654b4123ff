"""Tiny random models of more families (see tiny_families.py for the shape every builder follows).

Qwen3-VL (dense and MoE), Qwen3.5 (hybrid linear / full attention) and GLM-4.1V. Their processors always build a
video processor, which needs torchvision, so each is the family's class without it (`image_only_class`). The helpers
are imported inside the builders: tiny_families imports this module at its bottom.
"""

from __future__ import annotations

QWEN_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]


def _qwen_tokenizer(extra: tuple[str, ...] = ()):
    from tiny_families import _tokenizer

    return _tokenizer(
        QWEN_TOKENS + ["<|image_pad|>", "<|video_pad|>"] + list(extra),
        {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
    )


def _qwen_eos(tok) -> list[int]:
    """Qwen's generation config stops at the end of a turn or of the text."""
    return [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]


def _qwen_ids(tok) -> dict:
    pairs = [
        ("image_token_id", "<|image_pad|>"),
        ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"),
        ("vision_end_token_id", "<|vision_end|>"),
    ]
    return {key: tok.convert_tokens_to_ids(token) for key, token in pairs}


def _qwen3_processor(family: str, tok, assistant: str = "<|im_start|>assistant\n"):
    """Qwen3-VL's processor: images in 16-pixel patches merged 2 x 2, so one 32 x 32 image is one token."""
    from tiny_families import _template
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from mllmtune.models.bundle import image_only_class

    template = _template(
        "<|im_start|>user\n", "<|vision_start|><|image_pad|><|vision_end|>", "<|im_end|>\n", assistant, "<|im_end|>\n"
    )
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32, max_pixels=32 * 32
    )
    return image_only_class(family)(image_processor=image_processor, tokenizer=tok, chat_template=template)


def _qwen3_vision(**extra) -> dict:
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=16)
    vision.update(spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16, **extra)
    return vision


def _qwen3_rope() -> dict:
    # head_dim 16: 8 rotary frequencies, interleaved over (t, h, w)
    return {"rope_type": "default", "mrope_section": [4, 2, 2], "mrope_interleaved": True, "rope_theta": 10000.0}


def qwen3_vl():
    from tiny_families import _text
    from transformers import Qwen3VLConfig

    tok = _qwen_tokenizer()
    processor = _qwen3_processor("qwen3_vl", tok)
    text = _text(
        tok, model_type=None, head_dim=16, rope_parameters=_qwen3_rope(), max_position_embeddings=512,
        eos_token_id=_qwen_eos(tok),
    )  # fmt: skip
    vision = _qwen3_vision(deepstack_visual_indexes=[0])
    return Qwen3VLConfig(text_config=text, vision_config=vision, **_qwen_ids(tok)), processor


def qwen3_vl_moe():
    from tiny_families import _text
    from transformers import Qwen3VLMoeConfig

    tok = _qwen_tokenizer()
    processor = _qwen3_processor("qwen3_vl_moe", tok)
    moe = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, decoder_sparse_step=1)
    moe.update(num_key_value_heads=1)  # grouped-query attention, as in Qwen3-VL-30B-A3B
    text = _text(
        tok, model_type=None, head_dim=16, rope_parameters=_qwen3_rope(), max_position_embeddings=512,
        tie_word_embeddings=False, eos_token_id=_qwen_eos(tok), **moe,
    )  # fmt: skip
    vision = _qwen3_vision(deepstack_visual_indexes=[0])
    return Qwen3VLMoeConfig(text_config=text, vision_config=vision, **_qwen_ids(tok)), processor


def qwen3_5():
    from tiny_families import _text
    from transformers import Qwen3_5Config

    tok = _qwen_tokenizer(("<think>", "</think>"))
    # Qwen3.5's template without thinking: an empty thought opens every assistant turn
    processor = _qwen3_processor("qwen3_5", tok, assistant="<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # head_dim 16, half of it rotary: 8 dims, 4 frequencies interleaved over (t, h, w)
    rope = {"rope_type": "default", "mrope_section": [2, 1, 1], "mrope_interleaved": True, "rope_theta": 10000.0}
    rope["partial_rotary_factor"] = 0.5
    linear = dict(linear_conv_kernel_dim=4, linear_key_head_dim=8, linear_value_head_dim=8)
    linear.update(linear_num_key_heads=2, linear_num_value_heads=4)
    text = _text(
        tok, model_type=None, head_dim=16, rope_parameters=rope, max_position_embeddings=512,
        layer_types=["linear_attention", "full_attention"], eos_token_id=_qwen_eos(tok), **linear,
    )  # fmt: skip
    return Qwen3_5Config(text_config=text, vision_config=_qwen3_vision(), **_qwen_ids(tok)), processor


def glm4v():
    from tiny_families import _template, _text, _tokenizer
    from transformers import Glm4vConfig
    from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

    from mllmtune.models.bundle import image_only_class

    turns = ["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
    images = ["<|begin_of_image|>", "<|end_of_image|>", "<|image|>", "<|begin_of_video|>", "<|end_of_video|>"]
    tok = _tokenizer(
        ["<|endoftext|>"] + turns + images + ["<|video|>"],
        {"image_token": "<|image|>", "video_token": "<|video|>"},
        pad_token="<|endoftext|>",
        eos_token="<|endoftext|>",
    )
    # GLM-4.1V: a turn ends where the next begins, so generation also stops at `<|user|>` and `<|observation|>`
    template = _template(
        "<|user|>\n", "<|begin_of_image|><|image|><|end_of_image|>", "", "<|assistant|>\n", "", start="[gMASK]<sop>"
    )
    image_processor = Glm4vImageProcessorPil(size={"shortest_edge": 28 * 28, "longest_edge": 28 * 28 * 2})
    processor = image_only_class("glm4v")(image_processor=image_processor, tokenizer=tok, chat_template=template)
    ids = {
        key: tok.convert_tokens_to_ids(token)
        for key, token in [
            ("image_token_id", "<|image|>"),
            ("video_token_id", "<|video|>"),
            ("image_start_token_id", "<|begin_of_image|>"),
            ("image_end_token_id", "<|end_of_image|>"),
            ("video_start_token_id", "<|begin_of_video|>"),
            ("video_end_token_id", "<|end_of_video|>"),
        ]
    }
    rope = {"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    eos = [tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|user|>", "<|observation|>")]
    text = _text(tok, model_type=None, rope_parameters=rope, max_position_embeddings=512, eos_token_id=eos)
    text.update(num_key_value_heads=1)  # grouped-query attention, as in GLM-4.1V
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=14)
    vision.update(spatial_merge_size=2, temporal_patch_size=2, image_size=28)
    return Glm4vConfig(text_config=text, vision_config=vision, **ids), processor


BUILDERS = {"qwen3_vl": qwen3_vl, "qwen3_vl_moe": qwen3_vl_moe, "qwen3_5": qwen3_5, "glm4v": glm4v}
