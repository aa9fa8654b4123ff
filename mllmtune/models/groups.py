"""Module groups found from a vision-language model's own structure.

transformers 5 builds its image-text-to-text models one way: a head (`lm_head`) over an inner `model` whose children
are a vision encoder, a projector and a language model, under a handful of names (`vision_tower` / `visual` /
`vision_model`, `multi_modal_projector` / `connector` / `merger`, `language_model` / `text_model`). `discover` reads
those names and places every parameter in exactly one group: `vision`, `projector`, `language`, `lm_head`, or a
named extra group (`audio` for an audio tower). A projector that lives inside the vision module (Qwen's `merger`)
splits that module into its other children, so no two groups' prefixes overlap. Parameters it cannot place are
returned, and the model is refused with their names (`mllmtune.models.bundle.GROUPS` holds the exceptions).
"""

from __future__ import annotations

VISION = (
    "vision_tower",
    "visual",
    "vision_model",
    "vision_encoder",
    "image_tower",
    "video_tower",
    "high_res_vision_model",
    "vision_tokenizer",
    "vision_embed_tokens",  # Fuyu: a linear patch embedding is its whole vision encoder
)
PROJECTOR = (
    "multi_modal_projector",
    "connector",
    "projector",
    "aligner",
    "mm_projector",
    "merger",
    "deepstack_merger_list",  # Qwen3-VL: mergers of intermediate vision layers into the language model's width
    "vision_projection",
    "vision_adapter",
    "vision_resampler",
    "resampler_model",
    "high_res_vision_neck",
    "high_res_vision_proj",
    "image_newline",
    "view_seperator",
    "perception_emb_norm",
    "view_separator",
    "high_res_vision_alpha",
    "visual_embeddings_table",
    "qformer",  # BLIP-2 / InstructBLIP: the Q-Former and its learned queries bridge vision and language
    "query_tokens",
    "language_projection",
    "image_to_text_projection",
    "embed_vision",  # Gemma 4: the vision soft tokens' projection into the language model
)
LANGUAGE = ("language_model", "text_model")
EXTRA = {
    "audio_tower": "audio",
    "audio_tokenizer": "audio",
    "audio_model": "audio",
    "audio_projector": "audio",
    "embed_audio": "audio",  # Gemma 4
    # Janus: the image-generation path (VQ tokenizer, its embeddings, aligner and head), apart from understanding
    "vqmodel": "generation",
    "generation_embeddings": "generation",
    "generation_aligner": "generation",
    "generation_head": "generation",
}
ORDER = ("vision", "projector", "language", "lm_head")


def _kind(name: str) -> str | None:
    if name in VISION:
        return "vision"
    if name in PROJECTOR:
        return "projector"
    if name in LANGUAGE:
        return "language"
    if name == "lm_head":
        return "lm_head"
    return EXTRA.get(name)


def discover(model) -> tuple[dict[str, list[str]], list[str]]:
    """(group -> parameter-name prefixes, the parameter names no group holds)."""
    groups: dict[str, list[str]] = {}
    params = [name for name, _ in model.named_parameters()]

    def add(group: str, prefix: str) -> None:
        groups.setdefault(group, []).append(prefix)

    def place(module, prefix: str) -> None:
        """Classify the children of `module` (its path `prefix`) by name; a vision module holding a projector is
        split into its other parts."""
        for name, child in module.named_children():
            kind = _kind(name)
            path = f"{prefix}{name}."
            if kind == "vision" and any(_kind(n) == "projector" for n, _ in child.named_children()):
                for inner, _ in child.named_children():
                    add("projector" if _kind(inner) == "projector" else "vision", f"{path}{inner}.")
                for pname, _ in child.named_parameters(recurse=False):
                    add("vision", f"{path}{pname}")
            elif kind == "language" and any(n == "lm_head" for n, _ in child.named_children()):
                # a causal LM inside (Llama 4's `language_model`): its head is the lm_head group
                for inner, _ in child.named_children():
                    add("lm_head" if inner == "lm_head" else "language", f"{path}{inner}.")
                for pname, _ in child.named_parameters(recurse=False):
                    add("language", f"{path}{pname}")
            elif kind is not None:
                add(kind, path)
        for pname, _ in module.named_parameters(recurse=False):
            kind = _kind(pname)
            if kind is not None:
                add(kind, f"{prefix}{pname}")

    inner = getattr(model, "model", None)
    if inner is not None and inner is not model:
        place(inner, "model.")
    place(model, "")
    groups.setdefault("lm_head", ["lm_head."])  # a head tied to the embeddings holds no parameter of its own
    prefixes = [p for ps in groups.values() for p in ps]
    unplaced = [n for n in params if not any(_within(n, p) for p in prefixes)]
    ordered = {g: groups[g] for g in ORDER if g in groups} | {g: v for g, v in groups.items() if g not in ORDER}
    return ordered, unplaced


def _within(name: str, prefix: str) -> bool:
    return name.startswith(prefix) if prefix.endswith(".") else name == prefix
