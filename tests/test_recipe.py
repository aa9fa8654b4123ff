import pytest

from mllmtune.config.io import apply_overrides
from mllmtune.config.recipe import load_recipe
from mllmtune.errors import UserError

GOOD = """# mllmtune train --recipe {path}
name: t
strategy: {{name: freeze, groups: [vision]}}
stage: {{name: sft, epochs: 1}}
"""


def write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(text.format(path=path))
    return path


def test_valid_recipe_and_defaults(tmp_path):
    r = load_recipe(write(tmp_path, GOOD))
    assert r.strategy.name == "freeze" and r.strategy.groups == ["vision"]
    assert r.model.id == "world" and r.eval.retention == ["world-general"]


@pytest.mark.parametrize(
    "body, expected",
    [
        ("name: t\nstrategy: {name: full}\nstage: {learning_rat: 1}\n", "stage.learning_rat: unknown key"),
        ("name: t\nstrategy: {name: full, rank: 4}\n", "strategy.rank: not an option of strategy 'full'"),
        ("name: t\nstrategy: {name: nope}\n", "unknown strategy 'nope'; known:"),
        ("name: t\nstrategy: {name: full}\nseed: abc\n", "seed: Input should be a valid integer"),
        ("name: t\nstrategy: {name: full}\neval: {target: [emo]}\n", "eval.target: unknown benchmark 'emo'"),
        ("name: t\nstrategy: {name: freeze, groups: [eyes]}\n", "strategy.groups.0"),
        ("name: t\nstrategy: {name: full}\nmodle: {id: x}\n", "modle: unknown key"),
        ("name: t\nstrategy: {name: full\n", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
    ],
)
def test_bad_recipes_name_file_and_key(tmp_path, body, expected):
    path = write(tmp_path, body.replace("{", "{{").replace("}", "}}"))
    with pytest.raises(UserError) as exc:
        load_recipe(path)
    msg = str(exc.value)
    assert str(path) in msg and expected in msg and "\n" not in msg


def test_missing_file():
    with pytest.raises(UserError, match="recipe file not found"):
        load_recipe("no/such/recipe.yaml")


def test_overrides_typed_and_validated(tmp_path):
    path = write(tmp_path, GOOD)
    r = load_recipe(path, ["stage.learning_rate=3e-4", "seed=7", "strategy.groups=[vision, projector]"])
    assert r.stage.learning_rate == 3e-4 and r.seed == 7 and r.strategy.groups == ["vision", "projector"]
    with pytest.raises(UserError, match="stage.lr: unknown key"):
        load_recipe(path, ["stage.lr=1"])
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        apply_overrides({}, ["stage.lr"])


def test_hash_stable_and_sensitive(tmp_path):
    path = write(tmp_path, GOOD)
    a, b = load_recipe(path), load_recipe(path)
    assert a.hash() == b.hash()
    assert load_recipe(path, ["seed=3"]).hash() == a.hash()  # seeds are keyed apart
    assert load_recipe(path, ["stage.learning_rate=1e-3"]).hash() != a.hash()
    # how memory is held is not what the run computes
    assert load_recipe(path, ["stage.release_freed_memory=true"]).hash() == a.hash()


def test_shipped_recipes_validate_and_open_with_their_command():
    from pathlib import Path

    root = Path(__file__).parents[1]
    paths = sorted(root.glob("recipes/**/*.yaml"))
    assert paths
    for path in paths:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# mllmtune ") and str(path.relative_to(root)) in first
        load_recipe(path)


def test_mixed_precision_reaches_the_training_arguments(tmp_path):
    """SFT trains in float32 unless asked; GRPO keeps TRL's bf16 default; a typo names the key."""
    from trl import GRPOConfig

    from mllmtune.stages.grpo import GRPOStage
    from mllmtune.stages.loop import training_args
    from mllmtune.stages.sft import SFTStage

    plain = training_args(SFTStage(), tmp_path, 0, None)
    assert not plain.bf16 and not plain.fp16
    assert training_args(SFTStage(mixed_precision="bf16"), tmp_path, 0, None).bf16
    grpo = GRPOStage(name="grpo")
    assert grpo.mixed_precision == "bf16"
    assert training_args(grpo, tmp_path, 0, None, args_class=GRPOConfig).bf16
    assert not training_args(GRPOStage(name="grpo", mixed_precision="no"), tmp_path, 0, None, GRPOConfig).bf16
    with pytest.raises(UserError, match="stage.mixed_precision"):
        load_recipe(write(tmp_path, GOOD.replace("epochs: 1", "epochs: 1, mixed_precision: bf32")))
