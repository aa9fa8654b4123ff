"""Additive tuning: the base stays frozen; new modules, tokens or scaling vectors train."""

from __future__ import annotations

import functools
import warnings
from typing import Literal

from pydantic import Field

from mllmtune.strategies import bottleneck, targets
from mllmtune.strategies.registry import TargetedOptions, register


class AdapterOptions(TargetedOptions):
    name: Literal["adapter"] = "adapter"
    bottleneck: int = Field(16, ge=1, description="width of each adapter's hidden layer")


class _PromptOptions(TargetedOptions):
    # Virtual tokens enter the language model's input or its attention cache; peft has no vision-side variant.
    groups: list[Literal["language"]] = Field(default_factory=lambda: ["language"], min_length=1)
    num_virtual_tokens: int = Field(8, ge=1)


class PromptTuningOptions(_PromptOptions):
    name: Literal["prompt-tuning"] = "prompt-tuning"
    init: Literal["random", "sample_vocab"] = "sample_vocab"


class PrefixTuningOptions(_PromptOptions):
    name: Literal["prefix-tuning"] = "prefix-tuning"
    projection: bool = Field(
        False, description="reparameterize the prefix through an MLP (Li & Liang 2021, Prefix-Tuning, §4.3)"
    )
    projection_hidden: int = Field(128, ge=1)


class IA3Options(TargetedOptions):
    name: Literal["ia3"] = "ia3"


def _check_adapter(bundle, options: AdapterOptions) -> None:
    targets.block_targets(bundle, options.groups, options.name)


@register(
    "additive",
    "Bottleneck adapters after every attention and MLP block (hand-written; peft has none).",
    AdapterOptions,
    check=_check_adapter,
    save=bottleneck.save,
    load=bottleneck.load,
)
def adapter(bundle, options: AdapterOptions):
    blocks = targets.block_targets(bundle, options.groups, options.name)
    widths = bottleneck.attach(bundle.model, blocks, options.bottleneck)
    bundle.model.mllmtune_bottleneck = {"blocks": blocks, "bottleneck": options.bottleneck, "widths": widths}
    return bundle.model


def _drop_in(model):
    """Make a peft prompt-tuning model behave like the model it wraps, in two places peft leaves different.

    Logits: peft returns logits for the virtual tokens too, so they no longer line up with `input_ids` and any
    scorer that shifts logits against its own labels (our answer NLL, lm-eval) breaks; forward drops them (peft's
    own loss, computed inside with padded labels, is unchanged). Positions: peft drops `position_ids` in generation,
    so in a left-padded batch the pads sit between the virtual tokens and the prompt and shift every prompt position
    by the pad count (training right-pads, so it never sees that), and batched answers differ from one-at-a-time
    answers; positions are recomputed from the attention mask, which peft has already extended over the virtual
    tokens. Prefix tuning has its own fix, `_prefix_in_cache`.
    """
    import torch

    forward, virtual = model.forward, model.active_peft_config.num_virtual_tokens

    @functools.wraps(forward)
    def forward_on_real_tokens(*args, **kwargs):
        out = forward(*args, **kwargs)
        if getattr(out, "logits", None) is not None:
            out.logits = out.logits[:, virtual:]
        return out

    model.forward = forward_on_real_tokens
    prepare = model.prepare_inputs_for_generation

    def prepare_with_positions(*args, **kwargs):
        with warnings.catch_warnings():  # peft's "position ids are not supported": they are set right below
            warnings.filterwarnings("ignore", message="Position ids are not supported")
            inputs = prepare(*args, **kwargs)
        mask = inputs.get("attention_mask")
        x = inputs.get("inputs_embeds") if inputs.get("inputs_embeds") is not None else inputs.get("input_ids")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2 and x is not None:
            inputs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -x.shape[1] :]
        return inputs

    model.prepare_inputs_for_generation = prepare_with_positions
    return model


def _peft_loader(fix):
    """A registry `load` for a peft method whose model needs `fix` after `PeftModel.from_pretrained`."""

    def load(base_model, directory, options=None):
        from peft import PeftModel

        return fix(PeftModel.from_pretrained(base_model, str(directory)))

    return load


@register(
    "additive",
    "Trainable virtual tokens prepended to the language model's input embeddings (peft prompt tuning).",
    PromptTuningOptions,
    load=_peft_loader(_drop_in),
)
def prompt_tuning(bundle, options: PromptTuningOptions):
    from peft import PromptTuningConfig, PromptTuningInit

    init = PromptTuningInit.SAMPLE_VOCAB if options.init == "sample_vocab" else PromptTuningInit.RANDOM
    config = PromptTuningConfig(num_virtual_tokens=options.num_virtual_tokens, prompt_tuning_init=init)
    return _drop_in(targets.wrap_peft(bundle.model, config))


def _prefix_in_cache(model):
    """Make peft prefix tuning's `generate` use the prefix that its `forward` (training) uses.

    transformers 5 renamed the models' `past_key_values` argument to `cache`, and when both reach a forward the new
    name wins. peft (0.21) still hands the learned prefix over as `past_key_values` beside the empty `cache` that
    `generate` made, so generation silently ran the frozen base. This writes the prefix into that live cache on the
    first step; peft already extends the attention mask over the prefix and offsets the positions past it.
    """
    prepare = model.prepare_inputs_for_generation

    def prepare_with_prefix(*args, **kwargs):
        inputs = prepare(*args, **kwargs)
        prefix, cache = inputs.pop("past_key_values", None), inputs.get("cache")
        if prefix is None or cache is None:  # transformers < 5: peft's own path works
            if prefix is not None:
                inputs["past_key_values"] = prefix
            return inputs
        if cache.get_seq_length() == 0:
            for i, layer in enumerate(prefix.layers):
                cache.update(layer.keys, layer.values, i)
        return inputs

    model.prepare_inputs_for_generation = prepare_with_prefix
    return model


@register(
    "additive",
    "Trainable key/value prefixes in every language-model attention layer (peft prefix tuning).",
    PrefixTuningOptions,
    load=_peft_loader(_prefix_in_cache),
)
def prefix_tuning(bundle, options: PrefixTuningOptions):
    from peft import PrefixTuningConfig

    config = PrefixTuningConfig(
        num_virtual_tokens=options.num_virtual_tokens,
        prefix_projection=options.projection,
        encoder_hidden_size=options.projection_hidden,
    )
    return _prefix_in_cache(targets.wrap_peft(bundle.model, config))


def _check_ia3(bundle, options: IA3Options) -> None:
    targets.linear_targets(bundle, options.groups, options.name)


@register(
    "additive",
    "Learned scaling vectors on the dense layers' activations (peft IA3).",
    IA3Options,
    check=_check_ia3,
)
def ia3(bundle, options: IA3Options):
    """IA3 scales keys, values and the feed-forward's inner activation. Without relying on a family's module names,
    every dense layer under the groups is scaled on its wider side: its output, or its input where it shrinks the
    width (MLP down-projections such as down_proj or fc2, whose input is the feed-forward's inner activation).
    """
    from peft import IA3Config

    modules = dict(bundle.model.named_modules())
    names = targets.linear_targets(bundle, options.groups, options.name)
    feedforward = [n for n in names if modules[n].in_features > modules[n].out_features]
    return targets.wrap_peft(bundle.model, IA3Config(target_modules=names, feedforward_modules=feedforward))
