"""docs/recipes.md is generated from the schema; a change to a recipe key without regenerating it fails here."""

from __future__ import annotations

from pathlib import Path

from mllmtune.config.reference import markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"


def test_the_recipe_reference_is_current():
    assert DOC.read_text(encoding="utf-8") == markdown(), "docs/recipes.md is stale: run `make docs`"


def test_the_reference_lists_every_registered_key():
    from mllmtune.stages.registry import STAGES
    from mllmtune.strategies import REGISTRY

    text = markdown()
    for name, strategy in REGISTRY.items():
        assert f"`strategy.name: {name}`" in text
        assert all(f"`strategy.{key}`" in text for key in strategy.options.model_fields)
    for name, stage in STAGES.items():
        assert f"`stage.name: {name}`" in text
        assert all(f"`stage.{key}`" in text for key in stage.settings.model_fields)
    assert "| `stage.learning_rate` | float | `2e-06` |" in text  # GRPO's own default, beside SFT's `0.0001`
