"""Tiny random models of more families (see tiny_families.py for the shape every builder follows)."""

from __future__ import annotations

# tiny_families imports this module at its bottom, so its helpers are imported inside each builder, not here.


def llava_onevision():
    from tiny_families import _template, _text, _tokenizer
    from transformers import LlavaOnevisionConfig
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    from mllmtune.models.bundle import image_only_class

    tok = _tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
        {"image_token": "<image>", "video_token": "<video>"},
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
    )
    template = _template(
        "<|im_start|>user ", "<image>\n", "<|im_end|>\n", "<|im_start|>assistant\n", "<|im_end|>\n",
    )  # fmt: skip
    # anyres on a 28-pixel grid: the base view plus up to two tiles, each (28 / 14)^2 = 4 features
    pinpoints = [[28, 28], [28, 56], [56, 28]]
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28}, image_grid_pinpoints=pinpoints)
    processor = image_only_class("llava_onevision")(
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=template,
        num_image_tokens=4,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    vision.update(model_type="siglip_vision_model", image_size=28, patch_size=14, vision_use_head=False)
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=_text(tok, model_type="qwen2"),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
    )
    return config, processor


def internvl():
    from tiny_families import _template, _text, _tokenizer
    from transformers import InternVLConfig
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    from mllmtune.models.bundle import image_only_class

    images = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>"}
    tok = _tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
        {**images, "video_token": "<video>"},
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
    )
    template = _template(
        "<|im_start|>user\n", "<IMG_CONTEXT>\n", "<|im_end|>\n", "<|im_start|>assistant\n", "<|im_end|>\n",
    )  # fmt: skip
    # tiles of 28 pixels (at most two, plus the thumbnail); each (28 / 7)^2 = 16 patches, pixel-shuffled to 4 tokens
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": 28, "width": 28}, crop_to_patches=True, min_patches=1, max_patches=2
    )
    processor = image_only_class("internvl")(
        image_processor=image_processor, tokenizer=tok, chat_template=template, image_seq_length=4
    )
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    vision.update(image_size=[28, 28], patch_size=[7, 7])
    config = InternVLConfig(
        vision_config=vision,
        text_config=_text(tok, model_type="qwen2"),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=4,
        downsample_ratio=0.5,
        tie_word_embeddings=False,  # as the larger InternVL3 models; the test expects an lm_head of its own
    )
    return config, processor


def paligemma():
    from tiny_families import _text, _tokenizer
    from transformers import PaliGemmaConfig, PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tok = _tokenizer(
        ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"],
        {"image_token": "<image>"},
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )
    # PaliGemma has no chat turns: the processor puts the images first, then <bos>, the prefix and "\n"; the answer
    # (the suffix) follows and ends with <eos>. So a prompt with an image is the image and the text; one without
    # (which the processor refuses, so the tokenizer reads it) is written out whole: <bos>, the text and "\n".
    template = (
        "{% for m in messages %}{% set image = m['content'] | selectattr('type', 'equalto', 'image') | list %}"
        "{% if m['role'] == 'user' and not image %}{{ bos_token }}{% endif %}"
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
        "{% endfor %}{% if m['role'] == 'user' and not image %}\n{% elif m['role'] != 'user' %}<eos>{% endif %}"
        "{% endfor %}"
    )
    image_processor = SiglipImageProcessorPil(size={"height": 28, "width": 28})
    image_processor.image_seq_length = 4  # (28 / 14)^2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok, chat_template=template)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    vision.update(model_type="siglip_vision_model", image_size=28, patch_size=14, projection_dim=32)
    text = _text(processor.tokenizer, model_type="gemma", num_key_value_heads=1, head_dim=16)
    config = PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vocab_size=len(processor.tokenizer),
        projection_dim=32,
        hidden_size=32,
        tie_word_embeddings=False,
    )
    return config, processor


def mistral3():
    from tiny_families import _template, _text, _tokenizer
    from transformers import Mistral3Config
    from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil

    from mllmtune.models.bundle import pixtral_processor_class

    tok = _tokenizer(
        ["<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"],
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    template = _template("[INST]", "[IMG]", "[/INST]", "", "</s>", start="{{ bos_token }}")
    # images up to 56 pixels, in 14-pixel patches merged 2 x 2: at most 2 x 2 image tokens, a break after each row
    image_processor = PixtralImageProcessorPil(size={"longest_edge": 56}, patch_size={"height": 14, "width": 14})
    processor = pixtral_processor_class()(
        image_processor=image_processor, tokenizer=tok, chat_template=template, patch_size=14, spatial_merge_size=2
    )
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, head_dim=16)
    vision.update(model_type="pixtral", image_size=56, patch_size=14)
    config = Mistral3Config(
        vision_config=vision,
        text_config=_text(tok, model_type="mistral", head_dim=16, sliding_window=None),
        image_token_index=tok.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=2,
        tie_word_embeddings=False,  # as Mistral Small 3.1
    )
    return config, processor


BUILDERS = {"llava_onevision": llava_onevision, "internvl": internvl, "paligemma": paligemma, "mistral3": mistral3}
