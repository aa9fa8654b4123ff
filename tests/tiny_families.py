"""Tiny random models of real families, saved in the Hugging Face format with their processors.

Each builder makes a byte-level BPE tokenizer with the family's special tokens, a chat template shaped like the
family's own, a PIL image processor (no torchvision) and a config of one or two layers 32 wide, so a model loads,
trains a step and generates in a second on a CPU through exactly the path a hub model takes.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "Which emotion does this evoke? Answer using one emotional category: amusement, anger, awe, contentment, "
    "disgust, excitement, fear, sadness, joy, surprise. What color is the shape? red blue green yes no"
]
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)


def _tokenizer(special: list[str], extra: dict | None = None, **tokens):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=special, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=extra or {}, **tokens)


def _template(user: str, image: str, end_user: str, assistant: str, end_assistant: str, start: str = "") -> str:
    """A chat template in the family's shape: turn markers, where the image goes, how a turn ends."""
    return (
        start + "{% for m in messages %}{% if m['role'] == 'user' %}" + user + "{% else %}" + assistant + "{% endif %}"
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}" + image + "{% else %}{{ c['text'] }}{% endif %}"
        "{% endfor %}{% if m['role'] == 'user' %}" + end_user + "{% else %}" + end_assistant + "{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}" + assistant + "{% endif %}"
    )


def _text(tok, model_type: str | None = "llama", **extra) -> dict:
    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    return {**({"model_type": model_type} if model_type else {}), "vocab_size": len(tok), **SMALL, **ids, **extra}


def llava():
    from transformers import LlavaConfig, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = _tokenizer(
        ["<pad>", "<s>", "</s>", "<unk>", "<image>"],
        {"image_token": "<image>"},
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        chat_template=_template("USER: ", "<image>\n", " ", "ASSISTANT:", "</s>"),
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    vision = dict(model_type="clip_vision_model", image_size=28, patch_size=14, projection_dim=32, **SMALL)
    vision.update(num_hidden_layers=1)
    vision.pop("num_key_value_heads")
    config = LlavaConfig(
        vision_config=vision,
        text_config=_text(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        image_seq_length=4,
    )
    return config, processor


def qwen2_5_vl():
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from mllmtune.models.bundle import image_only_class

    names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
    tok = _tokenizer(
        names + ["<|image_pad|>", "<|video_pad|>"],
        {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
    )
    template = _template(
        "<|im_start|>user\n", "<|vision_start|><|image_pad|><|vision_end|>", "<|im_end|>\n", "<|im_start|>assistant\n",
        "<|im_end|>\n",
    )  # fmt: skip
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)
    processor = image_only_class("qwen2_5_vl")(image_processor=image_processor, tokenizer=tok, chat_template=template)
    ids = {
        key: tok.convert_tokens_to_ids(token)
        for key, token in [
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        ]
    }
    rope = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
    text = _text(tok, model_type=None, rope_parameters=rope, max_position_embeddings=512)
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=14)
    vision.update(spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[0])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids), processor


def idefics3():
    from transformers import Idefics3Config, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tiles = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tok = _tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<image>", "<fake_token_around_image>", "<global-img>"]
        + tiles,
        {"image_token": "<image>"},
        pad_token="<|endoftext|>",
        eos_token="<end_of_utterance>",
        bos_token="<|im_start|>",
    )
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False
    )
    template = _template("<|im_start|>User:", "<image>", "<end_of_utterance>\n", "Assistant:", "<end_of_utterance>\n")
    # 4 image tokens: (32 / 8)^2 patches, merged 2 x 2 by the connector (scale_factor 2)
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tok, image_seq_len=4, chat_template=template
    )
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32)
    config = Idefics3Config(
        vision_config=dict(vision, patch_size=8),
        text_config=_text(tok),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        pad_token_id=tok.pad_token_id,
    )
    return config, processor


def gemma3():
    from transformers import Gemma3Config, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    turns = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tok = _tokenizer(
        ["<pad>", "<eos>", "<bos>", "<unk>"] + turns,
        {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"},
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )
    template = _template(
        "<start_of_turn>user\n", "<start_of_image>", "<end_of_turn>\n", "<start_of_turn>model\n", "<end_of_turn>\n",
        start="{{ bos_token }}",
    )  # fmt: skip
    image_processor = Gemma3ImageProcessorPil(size={"height": 28, "width": 28})
    processor = Gemma3Processor(
        image_processor=image_processor, tokenizer=tok, chat_template=template, image_seq_length=4
    )
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28)
    config = Gemma3Config(
        vision_config=dict(vision, patch_size=7),
        text_config=_text(tok, model_type=None, num_key_value_heads=1, head_dim=16, sliding_window=64),
        mm_tokens_per_image=4,
        image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
        boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
    )
    return config, processor


BUILDERS = {"llava": llava, "qwen2_5_vl": qwen2_5_vl, "idefics3": idefics3, "gemma3": gemma3}


def _more() -> None:
    """The builders kept in their own files, one file per group of related families."""
    import tiny_gemma4_llama4
    import tiny_others
    import tiny_qwen3

    for module in (tiny_qwen3, tiny_others, tiny_gemma4_llama4):
        BUILDERS.update(module.BUILDERS)


_more()


def save_tiny(family: str, directory: Path, seed: int = 0) -> Path:
    """Build the family's tiny model and processor and save both to `directory` (a hub-style model folder)."""
    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    config, processor = BUILDERS[family]()
    AutoModelForImageTextToText.from_config(config).save_pretrained(str(directory))
    processor.save_pretrained(str(directory))
    return directory
