"""The GRPO stage as it trains: the reflective judge is the live policy, and several updates per rollout make the
clip act."""

from __future__ import annotations

import pytest
import torch

from mllmtune.config.recipe import load_recipe


def _varying_reward(completions, **kwargs) -> list[float]:
    """A reward that differs within each group, so that every step has a gradient."""
    return [float(len(str(c)) % 3) for c in completions]


def _stage(monkeypatch, **update):
    from mllmtune import rewards

    rewards.registry()  # the built-ins first; the test reward is registered for this test only
    monkeypatch.setitem(rewards._REGISTRY, "test-length", rewards.Reward("test-length", _varying_reward, False))
    recipe = load_recipe("recipes/world/rl/emo-r3.yaml", ["data.limit=8"])
    loop = dict(max_steps=2, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, logging_steps=1)
    rewards = {"test-length": 1.0, "coherence": 0.1, "consistency": 0.1}
    return recipe, recipe.stage.model_copy(update=loop | dict(max_completion_length=12, rewards=rewards) | update)


def _logits(model, inputs) -> torch.Tensor:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(**inputs.to(model.device)).logits[0, -1].float().clone()
    model.train(was)
    return out


def test_the_judge_is_the_live_updated_policy(micro_world, tmp_path, monkeypatch):
    import mllmtune.evaluation.generate as runner
    from mllmtune.models.bundle import load_bundle
    from mllmtune.runs.train import train_examples
    from mllmtune.stages import grpo

    recipe, stage = _stage(monkeypatch, updates_per_generation=1)  # a fresh rollout, so reflection, at each step
    assert stage.beta > 0  # TRL keeps a reference model
    torch.manual_seed(0)
    bundle = load_bundle("world")
    fixed = runner.encode_prompts(bundle.processor, [{"prompt": "Which emotion fits a dark room?", "image": None}])
    captured: dict = {}
    opener = grpo._policy_opener

    def capturing(trainer):
        captured["trainer"] = trainer
        return opener(trainer)

    monkeypatch.setattr(grpo, "_policy_opener", capturing)
    seen: list[dict] = []  # at every reflective generation: the judge's, the policy's and the reference's logits
    real = runner.generate

    def spying(model, processor, examples, *args, **kwargs):
        trainer = captured["trainer"]
        policy = trainer.accelerator.unwrap_model(trainer.model)
        seen.append(
            {
                "step": trainer.state.global_step,
                "judge": _logits(model, fixed),
                "policy": _logits(policy, fixed),
                "ref": _logits(trainer.ref_model, fixed),
            }
        )
        return real(model, processor, examples, *args, **kwargs)

    monkeypatch.setattr(runner, "generate", spying)
    grpo.run_grpo(bundle.model, bundle.processor, train_examples(recipe), stage, tmp_path, seed=0)
    first = [s for s in seen if s["step"] == 0]
    later = [s for s in seen if s["step"] == 1]
    assert len(first) == 2 and len(later) == 2  # coherence (text) and consistency (image), once per step
    for s in first:  # before any update, judge = policy = reference
        assert torch.equal(s["judge"], s["ref"]) and torch.equal(s["judge"], s["policy"])
    for s in later:  # after one optimizer step the judge is the updated policy, not the reference
        assert torch.equal(s["judge"], s["policy"])
        assert not torch.allclose(s["judge"], s["ref"])
        assert not torch.allclose(s["judge"], first[0]["judge"])


@pytest.mark.parametrize(("updates", "clips"), [(1, False), (2, True)])
def test_several_updates_per_rollout_make_the_clip_act(micro_world, tmp_path, monkeypatch, updates, clips):
    from transformers import TrainerCallback

    from mllmtune.models.bundle import load_bundle
    from mllmtune.runs.train import train_examples
    from mllmtune.stages import grpo, loop

    logged: list[dict] = []

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "clip_ratio/region_mean" in logs:
                logged.append(dict(logs))

    callbacks = loop.callbacks
    monkeypatch.setattr(loop, "callbacks", lambda progress, label: callbacks(progress, label) + [Record()])
    recipe, stage = _stage(monkeypatch, updates_per_generation=updates, rewards={"test-length": 1.0})
    torch.manual_seed(0)
    bundle = load_bundle("world")
    summary = grpo.run_grpo(bundle.model, bundle.processor, train_examples(recipe), stage, tmp_path, seed=0)
    assert summary["steps"] == 2 and len(logged) == 2
    # Step 1 is on-policy either way (ratio 1, nothing clipped); step 2 reuses step 1's rollouts only when asked to.
    assert logged[0]["clip_ratio/region_mean"] == 0.0
    assert (logged[1]["clip_ratio/region_mean"] > 0) == clips
