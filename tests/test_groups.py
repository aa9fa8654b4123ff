"""Module groups found from the model's own structure, over every image-text-to-text type transformers ships.

Each type is built from its default config on the meta device (no memory, no weights). Discovery must place every
parameter in exactly one group, or the type is refused with the parameters it could not place.
"""

from __future__ import annotations

import warnings

import pytest

TYPES = sorted(__import__("transformers").models.auto.modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)


def _skeleton(model_type: str):
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return AutoModelForImageTextToText.from_config(AutoConfig.for_model(model_type))


def _placement(groups: dict[str, list[str]], names: list[str]) -> dict[str, list[str]]:
    from mllmtune.models.groups import _within

    return {n: [g for g, prefixes in groups.items() if any(_within(n, p) for p in prefixes)] for n in names}


def test_discovery_on_a_hand_made_model():
    """Qwen's layout by hand: the merger inside the vision module is the projector, the rest of it is vision."""
    import torch

    from mllmtune.models.groups import discover

    class Visual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks, self.merger = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
            self.pos = torch.nn.Parameter(torch.zeros(2))

    class Inner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual, self.language_model = Visual(), torch.nn.Linear(2, 2)
            self.image_newline = torch.nn.Parameter(torch.zeros(2))

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.lm_head, self.mystery = Inner(), torch.nn.Linear(2, 3), torch.nn.Linear(1, 1)

    groups, unplaced = discover(Model())
    assert groups == {
        "vision": ["model.visual.blocks.", "model.visual.pos"],
        "projector": ["model.visual.merger.", "model.image_newline"],
        "language": ["model.language_model."],
        "lm_head": ["lm_head."],
    }
    assert unplaced == ["mystery.weight", "mystery.bias"]


@pytest.mark.slow
def test_every_image_text_to_text_type_is_placed_or_refused_by_name(capsys):
    from mllmtune.models.groups import discover

    placed, refused, unbuilt = [], {}, {}
    for model_type in TYPES:
        try:
            model = _skeleton(model_type)
        except Exception as exc:  # noqa: BLE001 - a default config transformers itself cannot build
            unbuilt[model_type] = type(exc).__name__
            continue
        groups, unplaced = discover(model)
        names = [n for n, _ in model.named_parameters()]
        placement = _placement(groups, names)
        assert all(len(gs) <= 1 for gs in placement.values()), model_type  # never in two groups
        assert [n for n, gs in placement.items() if not gs] == unplaced, model_type
        if not unplaced and "language" in groups:  # a default config may hold no vision tower (Gemma 4's)
            placed.append(model_type)
        else:
            refused[model_type] = f"{len(unplaced)} unplaced, e.g. {unplaced[:1]}; groups {sorted(groups)}"
    with capsys.disabled():
        print(f"\n{len(TYPES)} types: {len(placed)} placed, {len(refused)} refused, {len(unbuilt)} not buildable")
        for model_type, why in {**refused, **unbuilt}.items():
            print(f"  {model_type}: {why}")
    assert len(placed) >= 40
    named = (
        "qwen3_vl",
        "qwen3_5",
        "internvl",
        "gemma3",
        "gemma4",
        "llava_onevision",
        "paligemma",
        "mistral3",
        "glm4v",
    )
    for family in named:
        assert family in placed, family
    assert "llama4" in placed and "qwen3_vl_moe" in placed


def test_discovery_matches_the_hand_written_map_it_replaced():
    """The eight families the suite mapped by hand (transformers 5 layout), parameter by parameter."""
    from mllmtune.models.groups import discover

    llava = {"vision": ["model.vision_tower."], "projector": ["model.multi_modal_projector."],
             "language": ["model.language_model."], "lm_head": ["lm_head."]}  # fmt: skip
    qwen = {"vision": ["model.visual.blocks.", "model.visual.patch_embed.", "model.visual.rotary_pos_emb."],
            "projector": ["model.visual.merger."], "language": ["model.language_model."],
            "lm_head": ["lm_head."]}  # fmt: skip
    idefics = {"vision": ["model.vision_model."], "projector": ["model.connector."],
               "language": ["model.text_model."], "lm_head": ["lm_head."]}  # fmt: skip
    next_ = {**llava, "projector": ["model.multi_modal_projector.", "model.image_newline"]}
    hand = {"llava": llava, "llava_next": next_, "llava_onevision": next_, "qwen2_vl": qwen, "qwen2_5_vl": qwen,
            "idefics3": idefics, "smolvlm": idefics, "gemma3": llava}  # fmt: skip
    for family, groups in hand.items():
        model = _skeleton(family)
        names = [n for n, _ in model.named_parameters()]
        found, unplaced = discover(model)
        assert unplaced == [] and _placement(found, names) == _placement(groups, names), family
