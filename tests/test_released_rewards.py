"""EMO-R3's rewards as the released code scores them, on realistic replies.

Every expected value below is written by hand from the released rules (SeerRay-Lab/emo-r3):

- `examples/reward_function/emor3.py`, `compute_score`: the response first loses the whitespace around `<`, `>` and
  `/` (`re.sub(r"\\s*(<|>|/)\\s*", r"\\1", ...)`); format = full match of
  `<step1>.*</step1>.*<step2>.*</step2>.*<step3>.*</step3>.*\\\\boxed\\{.*\\}.*` (DOTALL); accuracy = the last
  `\\boxed{}`'s content (mathruler's `extract_boxed_content`: brace-balanced, stripped, "None" when absent),
  lowercased, equal to the label lowercased; coherence (`rethink_reward`): empty or "none" reply → 0.5, reply equal to
  the label (both lowercased, nothing stripped) → 1, else 0; consistency (`rethink_reward_image`): "yes" anywhere in
  the lowercased reply → 1, else "no" anywhere → 0, else 0.5; overall = 0.8·acc + 0.1·(coh + cons) + 0.1·format.
- `verl/trainer/ray_trainer.py`, `_rethink_batch`: coherence re-reads `<step1>.*?</step2>` of the raw reply, tags
  included, stripped, followed by "\\nWhich emotion best describes the text above?\\nAnswer the question using one
  emotional category (one word only): <labels>."; consistency shows the image and "Can the following text describe the
  image?Please answer with yes or no." followed by `(<step1>.*?)(?=<step2>)`, stripped, the text starting with a
  newline after the image (the released "<image>\nCan …" split at "<image>" by `verl/utils/dataset.py`); a reply with
  no such span is still asked, with "Answer 'None'" ("\nAnswer 'None'" after the image for consistency).

Nothing here is computed by the suite's own parsing functions.
"""

from __future__ import annotations

import pytest

from mllmtune.emo_r3 import rewards
from mllmtune.errors import UserError
from mllmtune.stages.grpo import GRPOStage

MIKELS = ["amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness"]
S1 = "<step1> a face with a frown. night light. spikes. </step1>"
S2 = "<step2> they would feel threatened </step2>"
S3 = "<step3> negative, high arousal </step3>"
WELL = f"{S1} {S2} {S3} \\boxed{{fear}}"

# (reply, accuracy, format) for the label "fear".
FORMAT_AND_ACCURACY = [
    pytest.param(WELL, 1.0, 1.0, id="well-formed"),
    pytest.param(WELL + ".", 1.0, 1.0, id="trailing-period"),
    pytest.param(f"{S1} {S2} {S3} Final answer: \\boxed{{fear}}", 1.0, 1.0, id="final-answer-prefix"),
    pytest.param(f"{S1} {S2} {S3} \\boxed{{\\text{{fear}}}}", 0.0, 1.0, id="text-in-box"),
    pytest.param(
        "< step1 > spikes < /step1 > < step2 > scared < /step2 > < step3 > negative < /step3 > \\boxed{fear}",
        1.0,
        1.0,
        id="spaced-tags",
    ),
    pytest.param(f"{S1} {S2} \\boxed{{fear}}", 1.0, 0.0, id="missing-step3"),
    pytest.param(f"{S1} {S2} {S3} \\boxed{{joy}} no wait \\boxed{{fear}}", 1.0, 1.0, id="two-boxes-last-right"),
    pytest.param(f"{S1} {S2} {S3} \\boxed{{fear}} or maybe \\boxed{{awe}}", 0.0, 1.0, id="two-boxes-last-wrong"),
    pytest.param("Fear.", 0.0, 0.0, id="bare-label"),
    pytest.param("", 0.0, 0.0, id="empty"),
    pytest.param("None", 0.0, 0.0, id="none"),
    pytest.param(f"{S1} {S2} {S3} \\boxed{{Fear}}", 1.0, 1.0, id="capitalised"),
    pytest.param(f"{S1} {S2} {S3} \\boxed{{ fear }}", 1.0, 1.0, id="spaces-in-box"),
    pytest.param(f"{S1} {S2} {S3} \\boxed{{fear.}}", 0.0, 1.0, id="period-in-box"),
    pytest.param(f"{S1} so {S2} hence {S3}\n\\boxed{{fear}}", 1.0, 1.0, id="text-between-blocks"),
    pytest.param(f"{S2} {S1} {S3} \\boxed{{fear}}", 1.0, 0.0, id="steps-out-of-order"),
    pytest.param(f"\\boxed{{fear}} {S1} {S2} {S3}", 1.0, 0.0, id="box-before-steps"),
    pytest.param(f"{S1} {S2} {S3} \\boxed{{fear", 0.0, 0.0, id="unclosed-box"),
    pytest.param(f"{S1} {S2} {S3} \\boxed{{}}", 0.0, 1.0, id="empty-box"),
    pytest.param(f"{S1} {S2} {S3} \\boxed{{ＦＥＡＲ}}", 0.0, 1.0, id="fullwidth-label"),
    pytest.param(f"{S1} {S2} {S3} \\boxed{{fear / awe}}", 0.0, 1.0, id="two-labels"),
    pytest.param("The answer is \\boxed{fear}", 1.0, 0.0, id="box-without-steps"),
    pytest.param([{"role": "assistant", "content": WELL}], 1.0, 1.0, id="conversational"),
]


@pytest.mark.parametrize(("reply", "accuracy", "fmt"), FORMAT_AND_ACCURACY)
def test_accuracy_and_format_as_released(reply, accuracy, fmt):
    columns = dict(label=["fear"], labels=[MIKELS], template=["emo-r3"])
    assert rewards.accuracy_reward([reply], **columns) == [accuracy]
    assert rewards.format_reward([reply], **columns) == [fmt]


COHERENCE_QUESTION = (
    "\nWhich emotion best describes the text above?\n"
    "Answer the question using one emotional category (one word only): "
    "amusement, anger, awe, contentment, disgust, excitement, fear, sadness."
)
S12 = f"{S1} {S2}"

# (reply, what the policy is asked, the policy's answer, coherence) for the label "fear".
COHERENCE = [
    pytest.param(WELL, S12 + COHERENCE_QUESTION, "fear", 1.0, id="right"),
    pytest.param(WELL, S12 + COHERENCE_QUESTION, "Fear", 1.0, id="capitalised"),
    pytest.param(WELL, S12 + COHERENCE_QUESTION, "Fear.", 0.0, id="with-period"),
    pytest.param(WELL, S12 + COHERENCE_QUESTION, "not fear but joy", 0.0, id="not-fear-but-joy"),
    pytest.param(WELL, S12 + COHERENCE_QUESTION, "sadness", 0.0, id="wrong"),
    pytest.param(WELL, S12 + COHERENCE_QUESTION, "", 0.5, id="empty"),
    pytest.param(WELL, S12 + COHERENCE_QUESTION, "None", 0.5, id="none"),
    pytest.param(WELL, S12 + COHERENCE_QUESTION, "none.", 0.0, id="none-with-period"),
    pytest.param(f"{S1} and {S2} {S3}", f"{S1} and {S2}" + COHERENCE_QUESTION, "fear", 1.0, id="text-between"),
    pytest.param("\\boxed{fear}", "Answer 'None'", "None", 0.5, id="no-reasoning"),
    pytest.param("\\boxed{fear}", "Answer 'None'", "fear", 1.0, id="no-reasoning-says-label"),
    pytest.param(f"{S1} {S3} \\boxed{{fear}}", "Answer 'None'", "None", 0.5, id="no-step2"),
    pytest.param("< step1 > a < /step1 > < step2 > b < /step2 >", "Answer 'None'", "none", 0.5, id="spaced-tags"),
]


@pytest.mark.parametrize(("reply", "asked", "answer", "expected"), COHERENCE)
def test_coherence_as_released(reply, asked, answer, expected):
    queries: list[dict] = []
    reward = rewards.make_coherence_reward(lambda qs: queries.extend(qs) or [answer] * len(qs))
    assert reward([reply], label=["fear"], labels=[MIKELS], template=["emo-r3"]) == [expected]
    assert [(q["prompt"], q["image"]) for q in queries] == [(asked, None)]


# After the image: the released "<image>\nCan …" is split at "<image>" (`verl/utils/dataset.py`, `_build_messages`).
CONSISTENCY_QUESTION = "\nCan the following text describe the image?Please answer with yes or no."

# (reply, what the policy is asked besides the image, the policy's answer, consistency).
CONSISTENCY = [
    pytest.param(WELL, CONSISTENCY_QUESTION + S1, "Yes", 1.0, id="yes"),
    pytest.param(WELL, CONSISTENCY_QUESTION + S1, "No.", 0.0, id="no"),
    pytest.param(WELL, CONSISTENCY_QUESTION + S1, "No, yes", 1.0, id="no-then-yes"),
    pytest.param(WELL, CONSISTENCY_QUESTION + S1, "It does not describe the image", 0.0, id="does-not-describe"),
    pytest.param(WELL, CONSISTENCY_QUESTION + S1, "maybe", 0.5, id="undecided"),
    pytest.param(WELL, CONSISTENCY_QUESTION + S1, "", 0.5, id="empty"),
    pytest.param(WELL, CONSISTENCY_QUESTION + S1, "None", 0.0, id="none-holds-no"),
    pytest.param(f"{S1} then {S2}", CONSISTENCY_QUESTION + f"{S1} then", "yes", 1.0, id="up-to-step2"),
    pytest.param(f"{S1} {S3} \\boxed{{fear}}", "\nAnswer 'None'", "None", 0.0, id="no-step2"),
    pytest.param("\\boxed{fear}", "\nAnswer 'None'", "yes", 1.0, id="no-reasoning"),
]


@pytest.mark.parametrize(("reply", "asked", "answer", "expected"), CONSISTENCY)
def test_consistency_as_released(reply, asked, answer, expected):
    queries: list[dict] = []
    reward = rewards.make_consistency_reward(lambda qs: queries.extend(qs) or [answer] * len(qs))
    assert reward([reply], image=["the-image"], label=["fear"], labels=[MIKELS], template=["emo-r3"]) == [expected]
    assert [(q["prompt"], q["image"]) for q in queries] == [(asked, "the-image")]


def _total(stage: GRPOStage, completion: str, judge: str) -> float:
    from mllmtune.stages.grpo import reward_functions

    funcs, weights = reward_functions(stage, ask=lambda qs: [judge] * len(qs))
    columns = dict(label=["fear"], labels=[MIKELS], template=["emo-r3"], image=["the-image"])
    return sum(w * f([completion], **columns)[0] for f, w in zip(funcs, weights, strict=True))


@pytest.mark.parametrize(
    ("preset", "completion", "judge", "total"),
    [
        # released: 0.8·acc + 0.1·coh + 0.1·cons + 0.1·format
        ("released", WELL, "fear", 0.8 + 0.1 * 1 + 0.1 * 0.5 + 0.1),  # "fear" holds neither "yes" nor "no"
        ("released", WELL, "yes", 0.8 + 0.1 * 0 + 0.1 * 1 + 0.1),
        ("released", "\\boxed{fear}", "None", 0.8 + 0.1 * 0.5 + 0.1 * 0 + 0.0),
        # paper: (1 - λ1 - λ2)·acc + λ1·(coh + cons)/2 + λ2·format, λ1 = λ2 = 0.1
        ("paper", WELL, "yes", 0.8 + 0.05 * 0 + 0.05 * 1 + 0.1),
        ("paper", "\\boxed{fear}", "None", 0.8 + 0.05 * 0.5 + 0.05 * 0 + 0.0),
    ],
)
def test_presets_weigh_the_terms(preset, completion, judge, total):
    assert _total(GRPOStage(name="grpo", rewards=preset), completion, judge) == pytest.approx(total)


def test_the_default_is_the_released_scoring():
    assert _total(GRPOStage(name="grpo"), WELL, "yes") == pytest.approx(1.0)


def test_unknown_reward_or_preset_lists_the_known_ones():
    from mllmtune.config.recipe import load_recipe

    with pytest.raises(UserError, match=r"stage\.rewards: unknown preset 'best'.*released.*paper"):
        load_recipe("recipes/world/rl/emo-r3.yaml", ["stage.rewards=best"])
    with pytest.raises(UserError, match=r"stage\.rewards: unknown reward 'fluency'; known: .*accuracy.*consistency"):
        load_recipe("recipes/world/rl/emo-r3.yaml", ["stage.rewards={accuracy: 1, fluency: 1}"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stage.labels=[]", "stage.labels: empty"),
        ('stage.labels=[fear, "joy, love"]', "stage.labels: 'joy, love' holds a comma"),
    ],
)
def test_a_label_set_the_coherence_prompt_cannot_name(override, message):
    from mllmtune.config.recipe import load_recipe

    with pytest.raises(UserError, match=message):
        load_recipe("recipes/world/rl/emo-r3.yaml", [override])


def test_a_data_label_set_the_coherence_prompt_cannot_name():
    from mllmtune.stages.grpo import check_labels

    with pytest.raises(UserError, match="data.labels: 'joy, love' holds a comma"):
        check_labels([{"answer": "fear", "labels": ["fear", "joy, love"]}], GRPOStage(name="grpo"))


def test_the_released_recipe_mirrors_the_released_config():
    """Values written by hand from examples/config.yaml and examples/qwen2_5_vl_3b_emor3.sh."""
    from mllmtune.config.recipe import load_recipe

    r = load_recipe("recipes/qwen2.5-vl-3b/emo-r3-released.yaml")
    s = r.stage
    assert r.model.id == "Qwen/Qwen2.5-VL-3B-Instruct" and r.seed == 1
    assert r.model.processor == {"min_pixels": 262144, "max_pixels": 4194304}
    assert (r.data.source, r.data.path, r.data.split) == ("hub", "fuyyy74/EmoSet2k", "train")
    assert r.strategy.name == "full" and s.template == "emo-r3" and s.epochs == 20
    assert s.rewards == {"accuracy": 0.8, "format": 0.1, "coherence": 0.1, "consistency": 0.1}
    assert (s.reflection.temperature, s.reflection.top_p, s.reflection.max_new_tokens) == (0.6, 0.95, 2048)
    assert (s.num_generations, s.temperature, s.top_p, s.max_completion_length) == (8, 1.0, 1.0, 2048)
    gpus = 8
    assert s.batch_size * s.grad_accum * gpus == 256 * 8  # 256 prompts x 8 rollouts per update
    assert s.batch_size * s.grad_accum * s.updates_per_generation * gpus == 512 * 8  # 512 prompts per rollout
    assert s.num_iterations == 1
    assert (s.learning_rate, s.lr_scheduler, s.warmup_ratio, s.weight_decay, s.max_grad_norm) == (
        2e-6,
        "constant",
        0.0,
        0.01,
        1.0,
    )
    assert (s.beta, s.epsilon, s.epsilon_high, s.loss_type) == (0.01, 0.2, 0.3, "dapo")


def test_processor_settings_reach_the_processor(tmp_path):
    """Qwen2.5-VL's max_pixels bounds the patches an image becomes (14 x 14 pixels each)."""
    from PIL import Image
    from tiny_families import save_tiny

    from mllmtune.models.bundle import load_bundle

    path = save_tiny("qwen2_5_vl", tmp_path / "qwen")
    image = Image.new("RGB", (448, 448), (120, 30, 30))

    def patches(**kwargs) -> int:
        processor = load_bundle(str(path), processor_kwargs=kwargs).processor.image_processor
        return int(processor(images=[image], return_tensors="pt")["image_grid_thw"].prod())

    assert patches() == 3136 // (14 * 14)  # the tiny processor's own bound
    assert patches(min_pixels=3136, max_pixels=448 * 448) == (448 // 14) ** 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stage.rewards=best", "stage.rewards: unknown preset 'best'; known: released, paper, accuracy-format"),
        ("stage.rewards={accuracy: 1, fluency: 2}", "stage.rewards: unknown reward 'fluency'; known: accuracy, coh"),
    ],
)
def test_bad_rewards_one_line_exit_2_nothing_written(override, message, tmp_path):
    from typer.testing import CliRunner

    from mllmtune.cli import app

    args = ["train", "--recipe", "recipes/world/rl/emo-r3.yaml", "--results", str(tmp_path / "r"), "--set", override]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
