"""The embedded world's tiny LLaVA: tokenizer, configs and processor, saved in the Hugging Face format.

Everything here produces standard `transformers` objects, so the rest of the suite loads the world's model
with the same `from_pretrained(path)` call it uses for any hub model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

IMAGE_SIZE = 48
PATCH_SIZE = 8
SPECIAL_TOKENS = ["<pad>", "<s>", "<|end|>", "<unk>", "<image>", "<|user|>", "<|assistant|>"]
# Tags of the structured answer formats: single tokens keep answers short, yet they decode as text.
TAG_TOKENS = [f"<{c}step{i}>" for i in (1, 2, 3) for c in ("", "/")] + ["<think>", "</think>", "\\boxed{"]

# A chat template in the usual Jinja form; content is a string or a list of {"type": "image"|"text"} parts.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>{% else %}<|assistant|>{% endif %}"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if m['role'] != 'user' %}<|end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class ModelSize:
    """Widths and depths of the tiny model; `micro` exists so tests build a world in seconds."""

    vocab: int = 1200
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 256
    text_layers: int = 4
    text_heads: int = 4
    max_positions: int = 512


SIZES = {
    "default": ModelSize(),
    "micro": ModelSize(
        vocab=600, vision_hidden=32, vision_layers=1, vision_heads=2, text_hidden=64, text_layers=2, text_heads=2
    ),
}


def train_tokenizer(corpus: Iterable[str], vocab_size: int):
    """Byte-level BPE trained on the world's corpus (lossless decoding, so parsed answers match what was said)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="<|end|>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
        model_max_length=SIZES["default"].max_positions,
    )
    fast.add_tokens(TAG_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_processor(tokenizer):
    """A LlavaProcessor over a CLIP image processor (PIL backend: no torchvision needed)."""
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,
    )


def build_model(tokenizer, size: ModelSize, seed: int = 0):
    """A randomly initialised LlavaForConditionalGeneration: CLIP-style tower, MLP projector, Llama decoder."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(
        hidden_size=size.vision_hidden,
        intermediate_size=4 * size.vision_hidden,
        num_hidden_layers=size.vision_layers,
        num_attention_heads=size.vision_heads,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=size.vision_hidden,
    )
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.text_hidden,
        intermediate_size=3 * size.text_hidden,
        num_hidden_layers=size.text_layers,
        num_attention_heads=size.text_heads,
        num_key_value_heads=size.text_heads,
        max_position_embeddings=size.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=end_id,
        tie_word_embeddings=False,
        attention_bias=True,  # biases give `bitfit` something to tune in the language model
        mlp_bias=True,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=end_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        max_new_tokens=64,
        do_sample=False,
    )
    return model
