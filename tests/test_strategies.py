"""The strategy zoo: one table drives the same checks over every strategy on the micro world's tiny LLaVA.

Per row: exactly the intended parameters train; after a few optimizer steps through the real SFT stage those (and
only those) changed; a save/load round trip reproduces the logits; the export reproduces them too (merged within
1e-4 for selective and reparameterization strategies, base + adapter for additive ones).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mllmtune import strategies
from mllmtune.errors import UserError
from mllmtune.strategies.qlora import fourbit_problem

L, V, P = "language", "vision", "projector"


@dataclass(frozen=True)
class Case:
    id: str
    options: dict
    expect: object  # (base parameter name, its group) -> should it train?


def peft_part(*parts: str, groups: tuple[str, ...] = (L,)):
    return lambda n, g: g in groups and any(p in n for p in parts)


CASES = [
    Case("full", {"name": "full"}, lambda n, g: True),
    Case("freeze", {"name": "freeze", "groups": [V]}, lambda n, g: g != V),
    Case("bitfit", {"name": "bitfit", "groups": [V, P, L]}, lambda n, g: n.endswith(".bias") and g in (V, P, L)),
    Case("ln-tuning", {"name": "ln-tuning", "groups": [V, L]}, peft_part("ln_tuning_layers", groups=(V, L))),
    Case(
        "mask",
        {"name": "mask", "groups": [L], "fraction": 0.1, "select": "gradient", "calibration_examples": 8},
        peft_part("supertuning_values"),
    ),
    Case(
        "adapter",
        {"name": "adapter", "groups": [L, P], "bottleneck": 4},
        peft_part(".mllmtune_adapter.", groups=(L, P)),
    ),
    Case("prompt-tuning", {"name": "prompt-tuning", "num_virtual_tokens": 4}, lambda n, g: "prompt_encoder" in n),
    Case("prefix-tuning", {"name": "prefix-tuning", "num_virtual_tokens": 4}, lambda n, g: "prompt_encoder" in n),
    Case("ia3", {"name": "ia3", "groups": [L]}, peft_part("ia3_l")),
    Case("lora", {"name": "lora", "groups": [L, V], "r": 4}, peft_part("lora_A", "lora_B", groups=(L, V))),
    Case("rslora", {"name": "rslora", "r": 4}, peft_part("lora_A", "lora_B")),
    Case("lora-plus", {"name": "lora-plus", "r": 4, "lr_ratio": 4}, peft_part("lora_A", "lora_B")),
    Case("dora", {"name": "dora", "r": 4}, peft_part("lora_A", "lora_B", "lora_magnitude_vector")),
    Case("pissa", {"name": "pissa", "r": 4}, peft_part("lora_A", "lora_B")),
    Case("vera", {"name": "vera", "groups": [L, P], "r": 16}, peft_part("vera_lambda", groups=(L, P))),
    Case("oft", {"name": "oft", "block_size": 16}, peft_part("oft_R")),
    Case("qlora", {"name": "qlora", "r": 4}, peft_part("lora_A", "lora_B")),
]


def test_table_covers_every_strategy():
    assert sorted(c.options["name"] for c in CASES if c.id == c.options["name"]) == sorted(strategies.REGISTRY)


def examples(n: int = 8) -> list[dict]:
    from mllmtune.data.chat import emotion_prompt
    from mllmtune.world.build import load_world_split

    rows = load_world_split("emoscenes-photo", "train", n)
    return [{"prompt": emotion_prompt(r["labels"]), "answer": r["label"], "image": r["image"]} for r in rows]


def inputs(processor, rows: list[dict]) -> dict:
    from mllmtune.data.chat import ChatCollator

    batch = ChatCollator(processor)(rows)
    batch.pop("labels")
    return batch


def logits(model, batch: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits.float()


def base_name(name: str) -> str:
    return name.removeprefix("base_model.model.")


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def trained(request, micro_world, tmp_path_factory):
    """A strategy applied to a fresh micro model, trained 3 steps through the SFT stage, and saved."""
    from mllmtune.data.chat import ChatCollator
    from mllmtune.models.bundle import load_bundle
    from mllmtune.stages.sft import SFTStage, run_sft
    from mllmtune.strategies.saving import save_tuned

    case = request.param
    if case.options["name"] == "qlora" and (why := fourbit_problem()):
        pytest.skip(f"bitsandbytes 4-bit kernels unavailable here: {why}")
    torch.manual_seed(0)
    rows = examples()
    bundle = load_bundle("world")
    base = {n: p.detach().clone() for n, p in bundle.model.named_parameters()}
    strategy = strategies.get(case.options["name"])
    options = strategy.options.model_validate(case.options)
    model = strategy.build(bundle, options, rows)
    bundle.model = model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()  # which trainable parameters a gradient reaches (CLIP's unused post-layernorm does not)
    model(**ChatCollator(bundle.processor)(rows[:4])).loss.backward()
    connected = {n for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    model.zero_grad(set_to_none=True)
    stage = SFTStage(max_steps=3, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, lr_scheduler="constant")
    optimizer = strategy.optimizer(model, options, stage) if strategy.optimizer else None
    out = tmp_path_factory.mktemp(case.id)
    run_sft(model, bundle.processor, rows, stage, out / "checkpoints", seed=0, optimizer=optimizer)
    batch = inputs(bundle.processor, [rows[0], {**rows[1], "image": None}])
    ref = logits(model, batch)
    model_dir = save_tuned(model, bundle, strategy, options, out / "model")
    return SimpleNamespace(
        case=case, rows=rows, bundle=bundle, base=base, strategy=strategy, options=options, model=model,
        before=before, connected=connected, out=out, batch=batch, ref=ref, model_dir=model_dir,
    )  # fmt: skip


def test_exactly_the_intended_parameters_train_and_only_they_move(trained):
    t = trained
    names = {n: t.bundle.group_of(base_name(n)) for n, _ in t.model.named_parameters()}
    trainable = {n for n, p in t.model.named_parameters() if p.requires_grad}
    expected = {n for n, g in names.items() if t.case.expect(base_name(n), g)}
    assert trainable and trainable == expected, sorted(trainable ^ expected)[:5]
    changed = {n for n, p in t.model.named_parameters() if not torch.equal(t.before[n], p.detach())}
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)[:5]}"
    assert changed == trainable & t.connected, f"trainable but unchanged: {sorted(t.connected - changed)[:5]}"
    assert len(t.connected) >= len(trainable) // 2, "most trainable parameters should receive a gradient"


def test_save_and_load_reproduce_the_logits(trained):
    from mllmtune.strategies.saving import load_tuned

    assert trained.ref.shape[:2] == trained.batch["input_ids"].shape, "logits must line up with input_ids"
    model, _, manifest = load_tuned(trained.model_dir)
    assert manifest["strategy"] == trained.strategy.name and manifest["family"] == trained.strategy.family
    assert torch.allclose(logits(model, trained.batch), trained.ref, atol=1e-5, rtol=0)


def test_export_reproduces_the_logits(trained):
    from transformers import AutoModelForImageTextToText

    from mllmtune.runs.export import export_model

    out = trained.out / "export"
    info = export_model(trained.model_dir, out)
    base = AutoModelForImageTextToText.from_pretrained(str(out), dtype=torch.float32)
    if trained.strategy.family == "additive":
        assert info["layout"] == "base model + adapter/" and (out / "adapter").is_dir()
        exported = trained.strategy.load(base, out / "adapter") if trained.strategy.load else None
        if exported is None:
            from peft import PeftModel

            exported = PeftModel.from_pretrained(base, str(out / "adapter"))
        assert torch.allclose(logits(exported, trained.batch), trained.ref, atol=1e-5, rtol=0)
    else:  # a plain transformers model: the update is merged into the weights
        assert info["layout"] == "merged model" and not (out / "adapter_config.json").exists()
        diff = (logits(base, trained.batch) - trained.ref).abs().max().item()
        assert diff < 1e-4, f"merged logits differ by {diff}"
    if trained.case.id == "mask":  # the merged update is sparse: only the selected entries moved
        for name, w in base.named_parameters():
            if ".language_model." in name and name.endswith("proj.weight"):
                moved = (w != trained.base[name]).sum().item()
                assert 0 < moved <= int(w.numel() * 0.1), (name, moved)


def case(case_id: str) -> list[Case]:
    return [c for c in CASES if c.id == case_id]


@pytest.mark.parametrize("trained", case("mask"), ids=["mask"], indirect=True)
def test_mask_by_gradient_selects_the_top_fisher_entries(trained):
    from peft.tuners.supertuning.layer import SupertuningLayer

    from mllmtune.models.bundle import load_bundle
    from mllmtune.strategies.selective import _fisher_scores

    fresh = load_bundle("world")
    layers = {base_name(n): m for n, m in trained.model.named_modules() if isinstance(m, SupertuningLayer)}
    scores = _fisher_scores(fresh, list(layers), trained.rows[:8])
    for name, layer in layers.items():
        chosen = layer.supertuning_indices["default"].long()
        assert abs(chosen.numel() - 0.1 * scores[name].numel()) <= 1
        threshold = scores[name].flatten().topk(chosen.numel()).values.min()
        assert (scores[name].flatten()[chosen] >= threshold).all(), name
        magnitude = layer.get_base_layer().weight.abs().flatten().topk(chosen.numel()).indices
        assert set(chosen.tolist()) != set(magnitude.tolist()), "gradient selection fell back to magnitude"


@pytest.mark.parametrize("trained", case("pissa"), ids=["pissa"], indirect=True)
def test_pissa_saves_a_plain_lora_for_the_untouched_base(trained):
    config = json.loads((trained.model_dir / "adapter_config.json").read_text())
    assert config["init_lora_weights"] is True and config["r"] == 2 * trained.options.r


def test_lora_plus_gives_b_its_own_learning_rate(bundle):
    from mllmtune.stages.sft import SFTStage

    s = strategies.get("lora-plus")
    options = s.options.model_validate({"name": "lora-plus", "r": 2, "lr_ratio": 8})
    model = s.build(bundle, options)
    optimizer = s.optimizer(model, options, SFTStage(learning_rate=1e-3))
    ids = {id(p): n for n, p in model.named_parameters()}
    lrs = {ids[id(p)].split(".")[-3]: g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lrs == {"lora_A": pytest.approx(1e-3), "lora_B": pytest.approx(8e-3)}


def test_prompt_tuning_generates_batched_as_one_at_a_time(bundle):
    """Left padding must not shift positions between the virtual tokens and the prompt (see additive.py)."""
    from mllmtune.data.chat import encode_prompts

    s = strategies.get("prompt-tuning")
    model = s.build(bundle, s.options.model_validate({"name": "prompt-tuning", "num_virtual_tokens": 4}))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 1)
    model.eval()
    rows = [{"prompt": "which digit is written in the image here?"}, {"prompt": "hi"}]

    def first_logits(batch):
        enc = encode_prompts(bundle.processor, batch)
        out = model.generate(
            **enc, max_new_tokens=1, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
        return out.logits[0]

    together = first_logits(rows)
    for i, row in enumerate(rows):
        assert torch.allclose(first_logits([row])[0], together[i], atol=1e-5), i


@pytest.mark.parametrize(
    "strategy, key",
    [
        ("bitfit", "rank: 4"),
        ("lora", "bottleneck: 8"),
        ("adapter", "r: 4"),
        ("mask", "alpha: 2"),
        ("qlora", "block_size: 4"),
    ],
)
def test_foreign_options_are_rejected_by_name(tmp_path, strategy, key):
    from mllmtune.config.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(f"name: t\nstrategy:\n  name: {strategy}\n  {key}\n")
    with pytest.raises(UserError) as exc:
        load_recipe(path)
    name = key.split(":")[0]
    assert f"strategy.{name}: not an option of strategy '{strategy}'" in str(exc.value)


def test_prompt_methods_accept_only_the_language_group(tmp_path):
    from mllmtune.config.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("name: t\nstrategy: {name: prefix-tuning, groups: [vision]}\n")
    with pytest.raises(UserError, match="strategy.groups.0"):
        load_recipe(path)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"name": "lora", "groups": [V]}, "group vision match no linear layer"),
        ({"name": "adapter", "groups": [V]}, "group vision matches no module"),
        ({"name": "ln-tuning", "groups": [P]}, "group projector match no normalization layer"),
        ({"name": "bitfit", "groups": ["lm_head"]}, "group lm_head match no bias term"),
    ],
)
def test_groups_that_match_nothing_are_one_line_naming_the_models_groups(bundle, options, message):
    if options["groups"] == [V]:  # a model without a vision tower under the expected prefix
        bundle = replace(bundle, groups={**bundle.groups, V: ["model.no_such_tower."]})
    s = strategies.get(options["name"])
    with pytest.raises(UserError) as exc:
        s.build(bundle, s.options.model_validate(options))
    msg = str(exc.value)
    assert message in msg and "\n" not in msg
    assert "its groups: " in msg and L in msg.split("its groups: ")[1]


def test_qlora_without_4bit_kernels_is_one_line_and_writes_nothing(micro_world, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mllmtune.cli import app
    from mllmtune.strategies import qlora

    monkeypatch.setattr(qlora, "fourbit_problem", lambda: "no 4-bit kernel for this device")
    results = tmp_path / "results"
    args = ["train", "--recipe", "recipes/world/reparameterization/qlora.yaml", "--results", str(results)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "strategy 'qlora' needs bitsandbytes 4-bit NF4 kernels" in res.output and "no 4-bit kernel" in res.output
    assert not results.exists()


def test_every_strategy_has_its_recipe():
    from mllmtune.config.recipe import load_recipe

    root = Path(__file__).parents[1] / "recipes" / "world"
    for s in strategies.REGISTRY.values():
        path = root / s.family / f"{s.name}.yaml"
        assert path.is_file(), path
        assert load_recipe(path).strategy.name == s.name


def test_ls_strategies_counts_parameters_on_a_model(micro_world):
    from typer.testing import CliRunner

    from mllmtune.cli import app

    res = CliRunner().invoke(app, ["ls", "strategies", "--json", "--model", "world"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output[res.output.index("[") :])}
    assert set(rows) == set(strategies.REGISTRY)
    assert rows["full"]["share"] == 100.0
    for name, row in rows.items():
        assert row["family"] and row["description"]
        assert 0 < row["trainable"] < row["total"] or name == "full", (name, row)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(str(p) for p in Path("recipes/world").glob("*/*.yaml")))
def test_every_recipe_runs_on_the_embedded_world(micro_world, tmp_path_factory, recipe):
    from typer.testing import CliRunner

    from mllmtune.cli import app
    from mllmtune.config.recipe import load_recipe

    if "qlora" in recipe and (why := fourbit_problem()):
        pytest.skip(f"bitsandbytes 4-bit kernels unavailable here: {why}")
    results = tmp_path_factory.getbasetemp() / "zoo-results"  # shared, so the zero-shot baseline is scored once
    short = ["--set", "stage.max_steps=2", "--set", "eval.limit=2"]
    args = ["train", "--recipe", recipe, "--results", str(results), *short]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    record = json.loads((results / "runs.jsonl").read_text().splitlines()[-1])
    s = strategies.get(load_recipe(recipe).strategy.name)
    assert record["status"] == "success" and (record["strategy"], record["family"]) == (s.name, s.family)
    assert (results / record["artifacts"]["model"] / "mllmtune_model.json").is_file()


def test_prefix_tuning_generation_follows_its_forward(micro_world):
    """Found by the world's strategy table: a prefix-tuned run answered exactly as the zero-shot base did, because
    transformers 5 takes the cache as `cache` and peft still passed the prefix as `past_key_values`.

    Each token that greedy generation picks, in a left-padded batch of prompts of different lengths, must be the
    argmax of the model's own forward pass over that one prompt and the tokens before it; with a large prefix the
    forward pass differs from the base's, and generation must follow it.
    """
    from mllmtune.data.chat import emotion_prompt, encode_prompts
    from mllmtune.models.bundle import load_bundle
    from mllmtune.world.build import load_world_split

    bundle = load_bundle("world")
    rows = examples(2) + [
        {"prompt": emotion_prompt(r["labels"]), "image": r["image"]}
        for r in load_world_split("emoscenes-art", "train", 2)
    ]
    strategy = strategies.get("prefix-tuning")
    model = strategy.build(bundle, strategy.options.model_validate({"name": "prefix-tuning"}), [])
    torch.manual_seed(0)
    for p in model.parameters():
        if p.requires_grad:
            p.data.normal_(0, 3)
    model.eval()
    batch = encode_prompts(bundle.processor, rows)
    assert (batch["attention_mask"] == 0).any(), "the prompts must differ in length so that the batch is padded"
    tok = bundle.processor.tokenizer
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
        new = out[:, batch["input_ids"].shape[1] :]
        base_first = model.get_base_model()(**batch).logits[:, -1].argmax(-1)
        for i, row in enumerate(rows):
            one = encode_prompts(bundle.processor, [row])
            steps = new[i].tolist()
            if tok.eos_token_id in steps:
                steps = steps[: steps.index(tok.eos_token_id) + 1]
            ids = torch.cat([one["input_ids"], torch.tensor([steps[:-1]], dtype=torch.long)], dim=1)
            seq = {**one, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
            picked = model(**seq).logits[0, -len(steps) :].argmax(-1).tolist()
            assert picked == steps, f"row {i}"
            # alone, unpadded (generation then passes no attention mask): the same tokens
            alone = model.generate(**one, max_new_tokens=len(steps), do_sample=False, pad_token_id=tok.pad_token_id)
            assert alone[0, one["input_ids"].shape[1] :].tolist() == steps, f"row {i} alone"
    assert new[:, 0].tolist() != base_first.tolist(), (
        "the prefix must change the answer for this test to mean anything"
    )
