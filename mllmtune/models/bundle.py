"""Load a model bundle: the model, its processor and its named module groups.

Strategies speak of groups (`vision`, `projector`, `language`, `lm_head`) rather than of module names, so one
recipe line targets the same part of any family. The groups are found from the model's own structure
(`mllmtune/models/groups.py`), on a weightless copy built from the config before any weight is read; `GROUPS` names
them by hand for a family discovery gets wrong.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mllmtune.errors import UserError

# Module groups of the families whose structure `mllmtune.models.groups.discover` does not read right: parameter-name
# prefixes per group, by `config.model_type`. Every family transformers ships that discovery places is found
# without an entry here (tests/test_groups.py checks it over all image-text-to-text types).
GROUPS: dict[str, dict[str, list[str]]] = {}
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
    dtype: str = "float32"
    quantization: str = "none"
    attn_implementation: str | None = None
    processor_kwargs: dict = field(default_factory=dict)

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


def offline_hint(model_id: str) -> str:
    return (
        f"model {model_id!r} is not a local folder and not in the Hugging Face cache, and the hub cannot be reached; "
        f"where there is network run `hf download {model_id} --local-dir DIR` (or copy the folder here) "
        "and set model.id to DIR"
    )


# Model ids a plug-in resolves itself (`name` or `name:variant`), e.g. the embedded world's "world" and
# "world:micro": name -> resolve(variant or None) -> (local folder, revision). Filled by `mllmtune.plugins`.
MODEL_IDS: dict[str, Callable[[str | None], tuple[str, str | None]]] = {}


def register_model_id(name: str, resolve: Callable[[str | None], tuple[str, str | None]]) -> None:
    MODEL_IDS[name] = resolve


def resolve_model_path(model_id: str) -> tuple[str, str | None]:
    """Map a recipe's `model.id` to a loadable path: a plug-in's id (built on first use), a folder or a hub id."""
    from mllmtune import plugins

    plugins.load()
    name, _, variant = model_id.partition(":")
    if name in MODEL_IDS:
        return MODEL_IDS[name](variant or None)
    path = Path(model_id).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"model path {path} has no config.json; expected a saved Hugging Face model folder")
        return str(path), None
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:
        raise UserError(f"model path does not exist: {model_id} (hub ids like org/name need network access)")
    return model_id, None


def _processor_class(family: str):
    """The processor class transformers names for `family` (None where it names none, e.g. remote code)."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = PROCESSOR_MAPPING_NAMES.get(family)
    return getattr(transformers, name, None) if isinstance(name, str) else None


def needs_image_only(family: str) -> bool:
    """True where the family's processor builds a video processor and torchvision, which every video processor
    needs, is not installed."""
    cls = _processor_class(family)
    return (
        cls is not None
        and "video_processor" in inspect.signature(cls.__init__).parameters
        and importlib.util.find_spec("torchvision") is None
    )


def image_only_class(family: str):
    """The family's processor class without its video processor, for machines without torchvision.

    Qwen-VL, InternVL, LLaVA-OneVision, GLM-4V and others always build a video processor, and every video processor
    needs torchvision. Images alone need only the PIL image processor and the tokenizer, so this is the same class
    whose `__init__` lacks the `video_processor` argument: transformers reads a processor's parts from that
    signature (`ProcessorMixin.get_attributes`), so `from_pretrained` loads the rest as usual. It keeps the family's
    class name, so a saved copy loads as the family's processor elsewhere.
    """
    base = _processor_class(family)
    # transformers reads a processor's accepted arguments from `__init__.__code__` as well as from its signature
    # (`ProcessorMixin.from_dict`), so a `*args, **kwargs` wrapper would drop them: the wrapper is written out with
    # the base's own named arguments, less `video_processor`, and their defaults.
    named = [
        p for p in inspect.signature(base.__init__).parameters.values()
        if p.name not in ("self", "video_processor") and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]  # fmt: skip
    defaults = {p.name: None if p.default is inspect.Parameter.empty else p.default for p in named}
    args = ", ".join(f"{p.name}=_defaults[{p.name!r}]" for p in named)
    passed = ", ".join(f"{p.name}={p.name}" for p in named)
    source = (
        f"def __init__(self, {args}, **kwargs):\n    _base.__init__(self, {passed}, video_processor=None, **kwargs)\n"
    )
    scope = {"_base": base, "_defaults": defaults}
    exec(source, scope)  # noqa: S102 - code built above from the base class's own parameter names
    from transformers import ProcessorMixin

    class WithoutVideo(ProcessorMixin):
        """Drops the `video_processor` a family hands on to `ProcessorMixin` by keyword (Gemma 4 does), which
        `ProcessorMixin` refuses for a class whose `__init__` lacks it; placed between the family and the mixin."""

        def __init__(self, *args, video_processor=None, **kwargs):
            super().__init__(*args, **kwargs)

    return type(base.__name__, (base, WithoutVideo), {"__init__": scope["__init__"], "__doc__": base.__doc__})


def load_processor(path: str, family: str, revision: str | None = None, trust_remote_code: bool = False, **kwargs):
    """The model's processor; `kwargs` (a recipe's `model.processor`) go to the image processor."""
    from transformers import AutoProcessor

    kw = {"revision": revision, "trust_remote_code": trust_remote_code, **kwargs}
    if needs_image_only(family):
        return image_only_class(family).from_pretrained(path, **kw)
    try:
        return AutoProcessor.from_pretrained(path, **kw)
    except ImportError as exc:  # Mistral 3's (or a LLaVA-format Pixtral's) processor, without torchvision
        if "PixtralProcessor" not in str(exc) or importlib.util.find_spec("torchvision") is not None:
            raise
        return pixtral_processor_class().from_pretrained(path, **kw)


def pixtral_processor_class():
    """PixtralProcessor on a machine without torchvision.

    Its module imports one function, `get_resize_output_image_size`, from the torchvision image processor's module,
    and the PIL image processor's module defines the same function; transformers' top-level `PixtralProcessor` is a
    placeholder that refuses without torchvision. The torchvision module is stood in for by one holding the PIL
    module's function (only when torchvision is absent and the module not yet imported), then the class comes from
    its own module.
    """
    import sys
    import types

    fast = "transformers.models.pixtral.image_processing_pixtral"
    if importlib.util.find_spec("torchvision") is None and fast not in sys.modules:
        from transformers.models.pixtral import image_processing_pil_pixtral as pil

        stand_in = types.ModuleType(fast)
        stand_in.get_resize_output_image_size = pil.get_resize_output_image_size
        sys.modules[fast] = stand_in
    from transformers.models.pixtral.processing_pixtral import PixtralProcessor

    return PixtralProcessor


def processor_at(path: str | Path):
    """The processor saved with a model folder, by the folder's own family (so Qwen loads without torchvision)."""
    from transformers import AutoConfig

    return load_processor(str(path), AutoConfig.from_pretrained(str(path)).model_type)


def quantization_config(kind: str, dtype):
    """bitsandbytes settings for `model.quantization` (the `qlora` strategy quantizes on its own)."""
    from transformers import BitsAndBytesConfig

    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
    )


def load_bundle(
    model_id: str,
    revision: str | None = None,
    dtype: str = "float32",
    attn_implementation: str | None = None,
    quantization: str = "none",
    trust_remote_code: bool = False,
    processor_kwargs: dict | None = None,
) -> Bundle:
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    path, resolved_revision = resolve_model_path(model_id)
    try:
        config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise UserError(f"{offline_hint(model_id)} ({str(exc).splitlines()[0]})") from None
    except ValueError as exc:  # custom code the recipe did not allow
        raise UserError(f"cannot load model {model_id!r}: {str(exc).splitlines()[0]}") from None
    family = config.model_type
    groups = module_groups(config, trust_remote_code)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    kwargs = {"revision": revision, "dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization != "none":
        kwargs["quantization_config"] = quantization_config(quantization, torch_dtype)
        kwargs["device_map"] = {"": "cuda" if torch.cuda.is_available() else "cpu"}
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    processor_kwargs = dict(processor_kwargs or {})
    try:
        processor = load_processor(path, family, revision, trust_remote_code, **processor_kwargs)
    except (TypeError, ValueError) as exc:
        if not processor_kwargs:
            raise
        raise UserError(f"model.processor: {str(exc).splitlines()[0]}") from None
    return Bundle(
        model=model,
        processor=processor,
        family=family,
        model_id=model_id,
        path=path,
        revision=revision or resolved_revision,
        groups=groups,
        dtype=dtype,
        quantization=quantization,
        attn_implementation=attn_implementation,
        processor_kwargs=processor_kwargs,
    )


def skeleton(config, dtype=None, trust_remote_code: bool = False):
    """The model `config` describes, built on the meta device: its structure, shapes and dtypes, no memory, no
    weights. One line when transformers has no image-text-to-text model for it or cannot build it."""
    import torch
    from transformers import AutoModelForImageTextToText

    family = config.model_type
    kwargs = {"trust_remote_code": trust_remote_code} | ({"dtype": dtype} if dtype is not None else {})
    try:
        with torch.device("meta"):
            return AutoModelForImageTextToText.from_config(config, **kwargs)
    except ValueError as exc:
        raise UserError(
            f"model family {family!r} is not supported: transformers has no image-text-to-text model for it "
            f"({str(exc).splitlines()[0][:160]})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a family's own build code; the user gets one line and a way out
        raise UserError(
            f"model family {family!r}: cannot build it to find its module groups ({exc}); {_override(family)}"
        ) from None


def _override(family: str) -> str:
    return f"name its groups in mllmtune/models/bundle.py: GROUPS[{family!r}] (group -> parameter-name prefixes)"


def module_groups(config, trust_remote_code: bool = False, model=None) -> dict[str, list[str]]:
    """The module groups of the model `config` describes: `GROUPS` for an exception, else discovered on `model` or
    on a copy built on the meta device (no memory, no weights). One line naming the problem when they cannot all be
    placed."""
    from mllmtune.models.groups import discover

    family = config.model_type
    if family in GROUPS:
        return GROUPS[family]
    groups, unplaced = discover(model if model is not None else skeleton(config, trust_remote_code=trust_remote_code))
    if unplaced:
        raise UserError(
            f"model family {family!r}: {len(unplaced)} parameter(s) fit no module group, e.g. "
            f"{', '.join(unplaced[:3])}; {_override(family)}"
        )
    if "language" not in groups:
        raise UserError(
            f"model family {family!r}: no language model found (groups: {', '.join(groups)}); {_override(family)}"
        )
    return groups


def read_config(model_id: str, trust_remote_code: bool = False):
    """(config, path) of a model folder, a config file (`config.json` or any `.json`), a plug-in's id or a hub id
    (from the cache when offline): the config alone, no weights read."""
    from transformers import AutoConfig

    file = Path(model_id).expanduser()
    path = str(file) if file.is_file() else resolve_model_path(model_id)[0]
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code), path
    except OSError as exc:
        raise UserError(
            f"cannot read the config of {model_id!r} ({str(exc).splitlines()[0][:120]}); without network pass a "
            f"local config file: `hf download {model_id} config.json --local-dir DIR` where there is network, "
            "then --model DIR/config.json"
        ) from None
    except ValueError as exc:
        raise UserError(f"cannot read the config of {model_id!r}: {str(exc).splitlines()[0]}") from None


def load_model(spec) -> Bundle:
    """The bundle a recipe's `model` section describes."""
    return load_bundle(
        spec.id,
        spec.revision,
        spec.dtype,
        attn_implementation=spec.attn_implementation,
        quantization=spec.quantization,
        trust_remote_code=spec.trust_remote_code,
        processor_kwargs=spec.processor,
    )
