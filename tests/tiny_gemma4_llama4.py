"""Tiny random models of more families (see tiny_families.py for the shape every builder follows).

Llama 4's only image processor is a torchvision one, so a PIL/NumPy copy of it (`Llama4ImageProcessorPil`) is
defined here and registered with transformers' auto classes on import: a saved model folder names
`Llama4ImageProcessor`, as a hub copy does, and `AutoProcessor.from_pretrained` resolves that to the PIL class
where torchvision is missing.
"""

from __future__ import annotations

import math

import numpy as np
from transformers import AutoImageProcessor, Llama4Config
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs
from transformers.utils import is_torchvision_available


class Llama4ImageProcessorKwargs(ImagesKwargs, total=False):
    """max_patches: the most tiles an image is cut into; resize_to_max_canvas: upscale to the largest canvas."""

    max_patches: int
    resize_to_max_canvas: bool


def _canvases(max_chunks: int, tile: int) -> list[tuple[int, int]]:
    """Every (height, width) made of at most `max_chunks` square tiles (Llama 4's `find_supported_resolutions`)."""
    ratios: dict[float, list[tuple[int, int]]] = {}
    for chunks in range(max_chunks, 0, -1):
        for h in sorted(f for f in range(1, chunks + 1) if chunks % f == 0):
            ratios.setdefault(h / (chunks // h), []).append((h, chunks // h))
    return [(h * tile, w * tile) for pairs in ratios.values() for h, w in pairs]


def _best_canvas(height: int, width: int, canvases: list[tuple[int, int]], to_max: bool) -> tuple[int, int]:
    """The canvas the image fits with the least scaling, up if it can (Llama 4's `get_best_fit`)."""
    scales = [min(ch / height, cw / width) for ch, cw in canvases]
    up = [s for s in scales if s >= 1]
    chosen = (max(up) if to_max else min(up)) if up else max(scales)
    fits = [c for c, s in zip(canvases, scales, strict=True) if s == chosen]
    return min(fits, key=lambda c: c[0] * c[1])


class Llama4ImageProcessorPil(PilBackend):
    """`Llama4ImageProcessor` without torchvision: fit the image, undistorted, on a canvas of square tiles, pad it,
    cut it into tiles and add a global tile (the whole image at tile size) when there is more than one. Returns
    `pixel_values` (all tiles of all images, tiles x 3 x size x size) and `aspect_ratios` (tile rows and columns per
    image), as the torchvision class does (which normalizes in bfloat16; here float32)."""

    resample = PILImageResampling.BILINEAR
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"height": 336, "width": 336}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    max_patches = 16
    resize_to_max_canvas = False
    valid_kwargs = Llama4ImageProcessorKwargs
    model_input_names = ["pixel_values"]

    def get_number_of_image_patches(self, height: int, width: int, images_kwargs: dict | None = None) -> int:
        kw = self._merge_and_standardize_kwargs(**(images_kwargs or {}))
        size = kw["size"]
        ch, cw = _best_canvas(height, width, _canvases(kw["max_patches"], size.height), kw["resize_to_max_canvas"])
        tiles = (ch // size.height) * (cw // size.width)
        return tiles + 1 if tiles > 1 else 1

    def _preprocess(
        self, images: list[np.ndarray], do_resize: bool, size: SizeDict, resample, do_rescale: bool,
        rescale_factor: float, do_normalize: bool, image_mean, image_std, max_patches: int,
        resize_to_max_canvas: bool, return_tensors=None, **kwargs,
    ) -> BatchFeature:  # fmt: skip
        if not do_resize:
            raise ValueError("Llama4 always resizes images to one of its supported resolutions")
        if size.height != size.width:
            raise ValueError("`size` must be square.")
        tile = size.height
        canvases = _canvases(max_patches, tile)

        def finish(image: np.ndarray) -> np.ndarray:
            if do_rescale:
                image = self.rescale(image, rescale_factor)
            if do_normalize:
                image = self.normalize(image, image_mean, image_std)
            return image.astype(np.float32)

        pixel_values, aspect_ratios = [], []
        for image in images:
            height, width = image.shape[-2:]
            ch, cw = _best_canvas(height, width, canvases, resize_to_max_canvas)
            # upscale no further than one tile unless asked to fill the canvas
            limit = (ch, cw) if resize_to_max_canvas else (min(max(height, tile), ch), min(max(width, tile), cw))
            if limit[1] / width < limit[0] / height:
                new = (min(math.floor(height * limit[1] / width), limit[0]), limit[1])
            else:
                new = (limit[0], min(math.floor(width * limit[0] / height), limit[1]))
            resized = self.resize(image, SizeDict(height=max(new[0], 1), width=max(new[1], 1)), resample=resample)
            canvas = self.pad([resized], pad_size=SizeDict(height=ch, width=cw))[0]
            canvas = finish(canvas)
            rows, cols = ch // tile, cw // tile
            tiles = canvas.reshape(canvas.shape[0], rows, tile, cols, tile).transpose(1, 3, 0, 2, 4)
            tiles = tiles.reshape(rows * cols, canvas.shape[0], tile, tile)
            if rows * cols > 1:
                whole = finish(self.resize(image, size, resample=resample))
                tiles = np.concatenate([tiles, whole[None]], axis=0)
            pixel_values.append(tiles)
            aspect_ratios.append([rows, cols])
        if return_tensors:
            pixel_values = np.concatenate(pixel_values, axis=0)
        data = {"pixel_values": pixel_values, "aspect_ratios": np.array(aspect_ratios, dtype=np.int64)}
        return BatchFeature(data=data, tensor_type=return_tensors)


def _register_llama4_pil() -> None:
    """Make transformers resolve Llama 4's image processor to `Llama4ImageProcessorPil` where torchvision is missing,
    as it would if it shipped that class: a saved folder names the base class (`Llama4ImageProcessor`, as a PIL
    class saves itself), so the PIL name joins Llama 4's backend map, and the class is registered so that name
    resolves to it."""
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    # without torchvision transformers maps Llama 4 to a placeholder of its torchvision class, which `register` refuses
    backends = {"pil": Llama4ImageProcessorPil} | ({} if is_torchvision_available() else {"torchvision": None})
    AutoImageProcessor.register(Llama4Config, image_processor_classes=backends, exist_ok=True)
    names = IMAGE_PROCESSOR_MAPPING_NAMES["llama4"]
    IMAGE_PROCESSOR_MAPPING_NAMES["llama4"] = {**names, "pil": Llama4ImageProcessorPil.__name__}


_register_llama4_pil()


def gemma4():
    """Gemma 4 as released in its small sizes (E2B/E4B): per-layer embeddings, a tied head, a vision tower whose
    patches are pooled k x k into soft tokens; without the audio tower (the tests use images and text only)."""
    from tiny_families import SMALL, _template, _text, _tokenizer
    from transformers import Gemma4Config
    from transformers.models.gemma4.feature_extraction_gemma4 import Gemma4AudioFeatureExtractor
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

    from mllmtune.models.bundle import image_only_class

    turns = ["<|turn>", "<turn|>", "<|image>", "<image|>", "<|image|>", "<|audio>", "<audio|>", "<|audio|>"]
    tok = _tokenizer(
        ["<pad>", "<eos>", "<bos>", "<unk>"] + turns + ["<|video|>"],
        {
            "image_token": "<|image|>",
            "boi_token": "<|image>",
            "eoi_token": "<image|>",
            "audio_token": "<|audio|>",
            "boa_token": "<|audio>",
            "eoa_token": "<audio|>",
        },
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )
    template = _template(
        "<|turn>user\n", "<|image|>", "<turn|>\n", "<|turn>model\n", "<turn|>\n", start="{{ bos_token }}"
    )
    # the fewest soft tokens Gemma 4 allows per image is 70: 4-pixel patches pooled 2 x 2, so about 34 x 34 pixels
    image_processor = Gemma4ImageProcessorPil(patch_size=4, pooling_kernel_size=2, max_soft_tokens=70)
    # the processor requires its audio feature extractor (numpy only) even where the model has no audio tower
    processor = image_only_class("gemma4")(
        feature_extractor=Gemma4AudioFeatureExtractor(),
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=template,
        image_seq_length=70,
    )
    text = _text(
        tok, model_type=None, num_key_value_heads=1, head_dim=16, global_head_dim=16, sliding_window=64,
        hidden_size_per_layer_input=8, vocab_size_per_layer_input=len(tok), max_position_embeddings=512,
        layer_types=["sliding_attention", "full_attention"],
    )  # fmt: skip
    vision = dict(SMALL, num_hidden_layers=1, head_dim=16, patch_size=4, pooling_kernel_size=2)
    vision.update(position_embedding_size=256)
    ids = {
        key: tok.convert_tokens_to_ids(token)
        for key, token in [
            ("image_token_id", "<|image|>"),
            ("boi_token_id", "<|image>"),
            ("eoi_token_id", "<image|>"),
            ("video_token_id", "<|video|>"),
            ("audio_token_id", "<|audio|>"),
            ("boa_token_id", "<|audio>"),
            ("eoa_token_index", "<audio|>"),
        ]
    }
    config = Gemma4Config(text_config=text, vision_config=vision, audio_config=None, **ids)
    return config, processor


def llama4():
    """Llama 4 (Scout/Maverick layout): mixture-of-experts layers interleaved with dense ones, chunked attention
    with every other layer without RoPE, an untied head, a vision model with pixel shuffle and a linear projector."""
    from tiny_families import SMALL, _template, _text, _tokenizer
    from transformers import Llama4Processor

    turns = ["<|finetune_right_pad_id|>", "<|begin_of_text|>", "<|end_of_text|>", "<|header_start|>", "<|header_end|>"]
    tiles = [
        "<|image_start|>",
        "<|image_end|>",
        "<|image|>",
        "<|patch|>",
        "<|tile_x_separator|>",
        "<|tile_y_separator|>",
    ]
    tok = _tokenizer(
        turns + ["<|eot|>"] + tiles,
        pad_token="<|finetune_right_pad_id|>",
        bos_token="<|begin_of_text|>",
        eos_token="<|eot|>",
    )
    header = "<|header_start|>{}<|header_end|>\n\n"
    template = _template(
        header.format("user"), "<|image|>", "<|eot|>", header.format("assistant"), "<|eot|>", start="{{ bos_token }}"
    )
    # one 28-pixel tile per image (two tiles and a global one would be 3x the tokens): 7-pixel patches, 16 of them,
    # shuffled 2 x 2 into 4 image tokens
    image_processor = Llama4ImageProcessorPil(size={"height": 28, "width": 28}, max_patches=1)
    processor = Llama4Processor(
        image_processor=image_processor, tokenizer=tok, patch_size=7, pixel_shuffle_ratio=0.5, chat_template=template
    )
    text = _text(
        tok, model_type=None, head_dim=16, intermediate_size=32, intermediate_size_mlp=64, num_local_experts=2,
        num_experts_per_tok=1, interleave_moe_layer_step=2, no_rope_layer_interval=2, attention_chunk_size=64,
        max_position_embeddings=512,
    )  # fmt: skip
    # the pixel-shuffle MLP takes hidden_size / ratio^2 features: the vision intermediate size, as in the release
    vision = dict(SMALL, num_hidden_layers=1, image_size=28, patch_size=7, pixel_shuffle_ratio=0.5)
    vision.update(intermediate_size=128)
    vision.update(vision_output_dim=32, projector_input_dim=32, projector_output_dim=32)
    vision.pop("num_key_value_heads")
    config = Llama4Config(
        vision_config=vision,
        text_config=text,
        boi_token_index=tok.convert_tokens_to_ids("<|image_start|>"),
        eoi_token_index=tok.convert_tokens_to_ids("<|image_end|>"),
        image_token_index=tok.convert_tokens_to_ids("<|patch|>"),
    )
    return config, processor


BUILDERS: dict = {"gemma4": gemma4, "llama4": llama4}
