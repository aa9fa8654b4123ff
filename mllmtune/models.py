"""Load a model bundle: the model, its processor and its named module groups.

Strategies speak of groups (`vision`, `projector`, `language`, `lm_head`) rather than of module names, so one
recipe line targets the same part of any supported family. A family is added by one entry in `GROUPS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mllmtune.errors import UserError

# Parameter-name prefixes of each group, per `config.model_type` (transformers >= 5 layout).
GROUPS: dict[str, dict[str, list[str]]] = {
    "llava": {
        "vision": ["model.vision_tower."],
        "projector": ["model.multi_modal_projector."],
        "language": ["model.language_model."],
        "lm_head": ["lm_head."],
    },
}
_LAYER = re.compile(r"\.layers\.(\d+)\.")


@dataclass
class Bundle:
    model: object
    processor: object
    family: str
    model_id: str
    path: str
    revision: str | None = None
    groups: dict[str, list[str]] = field(default_factory=dict)

    def group_prefixes(self, group: str) -> list[str]:
        return self.groups[group]

    def group_of(self, param_name: str) -> str | None:
        for group, prefixes in self.groups.items():
            if any(param_name.startswith(p) for p in prefixes):
                return group
        return None

    def language_layer_index(self, param_name: str) -> int | None:
        m = _LAYER.search(param_name)
        return int(m.group(1)) if m else None

    def num_language_layers(self) -> int:
        idx = {
            self.language_layer_index(n) for n, _ in self.model.named_parameters() if self.group_of(n) == "language"
        }
        idx.discard(None)
        return max(idx) + 1 if idx else 0


def resolve_model_path(model_id: str) -> tuple[str, str | None]:
    """Map a recipe's `model.id` to a loadable path; 'world' is the embedded base (built on first use)."""
    if model_id == "world" or model_id.startswith("world:"):
        from mllmtune.world.build import ensure_world

        world = ensure_world(model_id.split(":", 1)[1] if ":" in model_id else None)
        return str(world.model_dir), world.version
    path = Path(model_id).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"model path {path} has no config.json; expected a saved Hugging Face model folder")
        return str(path), None
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:
        raise UserError(f"model path does not exist: {model_id} (hub ids like org/name need network access)")
    return model_id, None


def load_bundle(model_id: str = "world", revision: str | None = None, dtype: str = "float32") -> Bundle:
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    path, world_revision = resolve_model_path(model_id)
    try:
        config = AutoConfig.from_pretrained(path, revision=revision)
    except OSError as exc:
        raise UserError(
            f"cannot load model {model_id!r}: not a local folder and not reachable on the hub "
            f"(hub ids need network access or a local copy; point model.id at the folder). {str(exc).splitlines()[0]}"
        ) from None
    family = config.model_type
    if family not in GROUPS:
        raise UserError(
            f"model family {family!r} is not supported; supported: {', '.join(sorted(GROUPS))} "
            "(a family is added in mllmtune/models.py: GROUPS)"
        )
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForImageTextToText.from_pretrained(path, revision=revision, dtype=torch_dtype)
    processor = AutoProcessor.from_pretrained(path, revision=revision)
    return Bundle(
        model=model,
        processor=processor,
        family=family,
        model_id=model_id,
        path=path,
        revision=revision or world_revision,
        groups=GROUPS[family],
    )
