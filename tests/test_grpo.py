"""EMO-R3 and the GRPO stage: templates, rewards, reflection batching, recipes, and GRPO over every strategy."""

from __future__ import annotations

import doctest
import json

import pytest
import torch

from mllmtune.config.recipe import load_recipe, validate
from mllmtune.emo_r3 import rewards
from mllmtune.emo_r3 import template as tpl
from mllmtune.errors import UserError
from mllmtune.stages.grpo import GRPOStage
from tests.test_strategies import CASES

STRUCTURED = (
    "<step1> a face with a frown. night light. spikes and fire. </step1> <step2> they would feel threatened </step2> "
    "<step3> the emotion is negative with high arousal </step3> \\boxed{fear}"
)


@pytest.mark.parametrize("module", [tpl, rewards])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_structured_answer_of_the_world_has_the_format():
    from mllmtune.world.general import structured_answer

    text = structured_answer("a face with a smile. warm light. sun.", "they would feel glad", "positive", "joy")
    assert tpl.has_format(text, "emo-r3") and tpl.predicted_label(text, "emo-r3", ["joy", "fear"]) == "joy"
    assert not tpl.has_format(text.replace("<step2>", "<stepX>"), "emo-r3")
    assert not tpl.has_format(text.replace("</step3>", ""), "emo-r3")


def test_accuracy_needs_the_boxed_label_exactly():
    out = rewards.accuracy_reward(
        [STRUCTURED, STRUCTURED.replace("fear", "anger"), "fear", "\\boxed{fearful}"],
        label=["fear"] * 4,
        labels=[["fear", "anger"]] * 4,
        template=["emo-r3"] * 4,
    )
    assert out == [1.0, 0.0, 0.0, 0.0]


def test_rewards_survive_a_very_long_unclosed_reply():
    long = "<step1> " + "spikes " * 5000 + "</step1>" * 3 + " \\boxed{fear"
    kw = dict(label=["fear"], labels=[["fear", "anger"]], template=["emo-r3"])
    assert rewards.accuracy_reward([long], **kw) == [0.0] and rewards.format_reward([long], **kw) == [0.0]


def test_reflective_rewards_ask_once_per_step_every_completion():
    calls = []

    def ask(queries):
        calls.append(queries)
        return ["fear" if "threatened" in q["prompt"] else "none" for q in queries]

    completions = [STRUCTURED, "\\boxed{fear}", STRUCTURED.replace("threatened", "calm")]
    coherence = rewards.make_coherence_reward(ask)(completions, label=["fear"] * 3, labels=[["fear", "joy"]] * 3)
    assert coherence == [1.0, 0.5, 0.5]
    assert len(calls) == 1 and len(calls[0]) == 3  # one batch; the completion without reasoning is asked "None"
    assert calls[0][1]["prompt"] == tpl.NONE_QUESTION
    assert calls[0][0]["image"] is None and "Which emotion best describes the text above?" in calls[0][0]["prompt"]

    calls.clear()
    images = ["img-a", "img-b", "img-c"]
    consistency = rewards.make_consistency_reward(lambda qs: calls.append(qs) or ["yes", "none", "no"])(
        completions, image=images
    )
    assert consistency == [1.0, 0.0, 0.0]
    assert len(calls) == 1 and [q["image"] for q in calls[0]] == images
    assert calls[0][0]["prompt"].endswith("<step1> a face with a frown. night light. spikes and fire. </step1>")
    assert calls[0][1]["prompt"] == "\nAnswer 'None'"


def test_reward_terms_follow_the_recipe_weights():
    from mllmtune.stages.grpo import reward_functions

    stage = GRPOStage(name="grpo", rewards={"accuracy": 1, "format": 0.5, "coherence": 0, "consistency": 0.2})
    funcs, weights = reward_functions(stage, ask=lambda qs: [])
    assert [f.__name__ for f in funcs] == ["accuracy_reward", "format_reward", "consistency_reward"]
    assert weights == [1, 0.5, 0.2]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stage.batch_size=3", "= 6, must be a multiple of num_generations 4"),
        ("stage.rewards={accuracy: 0, format: 0, coherence: 0, consistency: 0}", "every weight is 0"),
        ("stage.rewards.reflection=1", "stage.rewards: unknown reward 'reflection'"),
        ("stage.template=cot", "stage.template"),
    ],
)
def test_bad_grpo_recipes_name_the_key(override, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_recipe("recipes/world/rl/emo-r3.yaml", [override])


def test_eval_template_follows_the_stage():
    assert load_recipe("recipes/world/rl/emo-r3.yaml").eval.template == "emo-r3"
    assert load_recipe("recipes/world/rl/grpo.yaml", ["stage.template=think"]).eval.template == "think"
    assert load_recipe("recipes/world/sft-full.yaml").eval.template == "plain"
    recipe = validate({"name": "x", "strategy": {"name": "full"}, "stage": {"name": "grpo"}, "eval": {}}, "t")
    assert recipe.eval.template == "emo-r3"


def test_reasoning_metrics_check_steps_against_the_truth():
    from mllmtune.world.reasoning import reasoning_metrics

    cues = json.dumps({"face": None, "light": "night", "objects": ["spikes", "fire"]})
    ex = {"valence": -0.8, "arousal": 0.85, "cues": cues, "answer": "fear", "labels": ["fear", "joy"]}
    wrong = STRUCTURED.replace("negative with high", "positive with high").replace("spikes", "sun")
    wrong = wrong.replace("\\boxed{fear}", "\\boxed{joy}")
    m = reasoning_metrics([ex, ex, ex], [STRUCTURED, wrong, "\\boxed{\\text{Fear}}"], "emo-r3")
    assert m["structured"] == pytest.approx(200 / 3)
    assert m["accuracy_lenient"] == pytest.approx(200 / 3)  # the third only when `\text{}` is unwrapped
    assert m["step3_polarity"] == pytest.approx(100 / 3) and m["step3_arousal"] == pytest.approx(200 / 3)
    assert m["step1_cue_precision"] == pytest.approx(100 * 5 / 6)  # night, spikes, fire | night, sun, fire
    assert "step1_cue_precision" not in reasoning_metrics([ex], ["\\boxed{fear}"], "emo-r3")


def test_policy_asker_one_generation_per_reward_and_restores_training(bundle, monkeypatch):
    import mllmtune.evaluation.generate as runner
    from mllmtune.world.build import load_world_split

    calls = []
    real = runner.generate

    def counting(model, processor, examples, *args, **kwargs):
        calls.append((len(examples), kwargs))
        return real(model, processor, examples, *args, **kwargs)

    monkeypatch.setattr(runner, "generate", counting)
    from contextlib import nullcontext

    model = bundle.model.train()
    ask = rewards.policy_asker(lambda: nullcontext(model), bundle.processor, 0.6, 0.95, 4, batch_size=64)
    rows = load_world_split("emoscenes-photo", "train", 3)
    reward = rewards.make_consistency_reward(ask)
    out = reward([STRUCTURED] * 3, image=[r["image"] for r in rows])
    assert calls == [(3, {"do_sample": True, "temperature": 0.6, "top_p": 0.95})]
    assert len(out) == 3 and model.training
    monkeypatch.setattr(runner, "generate", lambda model, processor, examples, *a, **k: ["yes", "no", "maybe"])
    ask = rewards.policy_asker(lambda: nullcontext(model), bundle.processor, 0.6, 0.95, 4, batch_size=64)
    reward = rewards.make_consistency_reward(ask)
    assert reward([STRUCTURED] * 3, image=[r["image"] for r in rows]) == [1.0, 0.0, 0.5]  # each reply to its own


def test_candidate_labels_must_cover_the_data():
    from mllmtune.stages.grpo import check_labels

    stage = GRPOStage(name="grpo", labels=["fear", "joy"])
    check_labels([{"answer": "fear"}, {"answer": "joy"}], stage)
    with pytest.raises(UserError, match="stage.labels: misses the data set's labels anger, awe"):
        check_labels([{"answer": "fear"}, {"answer": "awe"}, {"answer": "anger"}], stage)


def test_cold_start_answers_come_from_the_cues(micro_world):
    from mllmtune.config.recipe import load_recipe as load
    from mllmtune.runs.train import train_examples
    from mllmtune.stages.grpo import cold_start_examples, rollout_rows

    recipe = load("recipes/world/rl/emo-r3-cold-start.yaml", ["data.limit=4"])
    examples = train_examples(recipe)
    cold = cold_start_examples(examples, recipe.stage)
    assert all(tpl.has_format(c["answer"], "emo-r3") for c in cold)
    assert [tpl.predicted_label(c["answer"], "emo-r3", e["labels"]) for c, e in zip(cold, examples, strict=True)] == [
        e["answer"] for e in examples
    ]
    assert all(tpl.step(c["answer"], 1) == e["description"] for c, e in zip(cold, examples, strict=True))
    rows = rollout_rows(examples, recipe.stage)
    assert rows[0]["prompt"][0]["content"].endswith(tpl.STRUCTURED_INSTRUCTION)
    assert rows[0]["label"] == examples[0]["answer"] and rows[0]["template"] == "emo-r3"
    with pytest.raises(UserError, match="carry a written answer"):
        cold_start_examples([{"answer": "fear", "labels": ["fear"], "prompt": "?"}], recipe.stage)


def _varying_reward(completions, **kwargs):
    """Rewards that differ within a group, so advantages (and gradients) are non-zero on an untrained model."""
    return [float(len(rewards._text(c)) % 3) for c in completions]


# Every strategy in the GRPO stage; LoRA stays in the fast run, the rest are slow.
GRPO_CASES = [pytest.param(c, id=c.id, marks=() if c.id == "lora" else pytest.mark.slow) for c in CASES]


@pytest.mark.parametrize("case", GRPO_CASES)
def test_grpo_moves_only_what_the_strategy_trains(case, micro_world, tmp_path, monkeypatch):
    from mllmtune import strategies
    from mllmtune.models.bundle import load_bundle
    from mllmtune.runs.train import train_examples
    from mllmtune.stages.grpo import run_grpo
    from mllmtune.strategies.qlora import fourbit_problem

    if case.options["name"] == "qlora" and (why := fourbit_problem()):
        pytest.skip(f"bitsandbytes 4-bit kernels unavailable here: {why}")
    from mllmtune import rewards as registry

    registry.registry()  # the built-ins first; a reward by name in place of accuracy (0 for the untrained policy)
    monkeypatch.setitem(registry._REGISTRY, "test-varying", registry.Reward("test-varying", _varying_reward, False))
    weights = "{test-varying: 0.8, format: 0.1, coherence: 0.1, consistency: 0.1}"
    recipe = load_recipe("recipes/world/rl/emo-r3.yaml", ["data.limit=8", f"stage.rewards={weights}"])
    loop = dict(max_steps=2, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, logging_steps=1)
    stage = recipe.stage.model_copy(update=dict(loop, max_completion_length=12))
    torch.manual_seed(0)
    bundle = load_bundle("world")
    strategy = strategies.get(case.options["name"])
    options = strategy.options.model_validate(case.options)
    examples = train_examples(recipe)
    model = strategy.build(bundle, options, examples)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}  # what the strategy left, before training
    optimizer = strategy.optimizer(model, options, stage) if strategy.optimizer else None
    summary = run_grpo(model, bundle.processor, examples, stage, tmp_path, seed=0, optimizer=optimizer)
    assert summary["steps"] == 2
    logged = {"_varying_reward", "format_reward", "coherence_reward", "consistency_reward", "reward"}
    assert logged <= set(summary["rewards"])
    after = dict(model.named_parameters())  # TRL adds a frozen "ref" copy of a PEFT adapter beside the trained one
    moved = {n for n in before if not torch.equal(after[n].detach(), before[n])}
    assert moved and moved <= trainable, sorted(moved - trainable)[:3]
    assert {n for n in before if after[n].requires_grad} == trainable  # the stage froze or unfroze nothing


@pytest.mark.slow
def test_emo_r3_with_cold_start_through_the_cli(micro_world, tmp_path):
    from typer.testing import CliRunner

    from mllmtune.cli import app

    results = tmp_path / "results"
    args = ["train", "--recipe", "recipes/world/rl/emo-r3-cold-start.yaml", "--results", str(results)]
    for s in ("stage.max_steps=2", "stage.batch_size=8", "stage.max_completion_length=16", "eval.limit=4"):
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    records = [json.loads(x) for x in (results / "runs.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["zero-shot", "grpo"]
    run = records[1]
    assert run["status"] == "success" and run["recipe"]["eval"]["template"] == "emo-r3"
    assert set(run["scores"]) == {f"emoscenes-{d}/emo-r3-r2@1" for d in ("photo", "art", "web")} | {
        "world-general@2",
        "world-emotion-knowledge@1",
    }
    assert {"structured", "step3_polarity"} <= set(run["scores"]["emoscenes-photo/emo-r3-r2@1"])
    assert run["train"]["cold_start"]["steps"] > 0 and run["train"]["steps"] == 2
    assert {"accuracy_reward", "format_reward", "coherence_reward", "consistency_reward"} <= set(
        run["train"]["rewards"]
    )
