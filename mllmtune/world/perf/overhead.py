"""Suite overhead (SFT through the suite against a plain Trainer script) and reflection overhead (EMO-R3 against
plain GRPO), each a median of steady-state step times: warm-up steps, model loading and evaluation are left out.

The suite side is the path `mllmtune train` takes: `models.load_bundle`, the registered strategy's `build`, and
`stages.sft.run_sft` with a live progress display; only a step timer is added (`extra_callbacks`).

Whole step times of two processes doing identical work differ by tens of percent on a shared CPU, more than the 5%
the SFT ratio is held to. So each SFT step is also split (`common.step_parts`): the suite's own code runs where
batches are fetched and collated and where callbacks run, and both sides' step losses are compared to show that
forward, backward and the optimizer do the same work. The GRPO figures also time the reflective queries themselves.
"""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from mllmtune.world.perf.common import Setup, loop_callback, step_parts, step_timer

# The strategies of the overhead figure, configured as the world's recipes configure them.
SFT_STRATEGIES = {
    "full": {"name": "full"},
    "lora": {"name": "lora", "groups": ["language"], "r": 8, "alpha": 16},
    "freeze": {"name": "freeze", "groups": ["vision", "projector"]},
}
PLAIN_SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "perf" / "plain_trainer.py"


@dataclass
class SFTSizes:
    steps: int = 20  # timed steps
    warmup: int = 3
    batch_size: int = 16
    learning_rate: float = 1e-4


def plain_module():
    if not PLAIN_SCRIPT.is_file():
        from mllmtune.errors import UserError

        raise UserError(f"perf: the plain baseline {PLAIN_SCRIPT} is missing (install mllmtune from its repository)")
    spec = importlib.util.spec_from_file_location("plain_trainer", PLAIN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def suite_sft(setup: Setup, strategy: str, sizes: SFTSizes, seed: int, progress, timer) -> None:
    """The suite's SFT stage with `strategy` applied through the registry, stamped by `timer`."""
    from transformers import set_seed

    from mllmtune import strategies
    from mllmtune.models.bundle import load_bundle
    from mllmtune.stages.sft import SFTStage, run_sft

    set_seed(seed)
    bundle = load_bundle(str(setup.model_dir))
    spec = strategies.get(strategy)
    options = spec.options.model_validate(SFT_STRATEGIES[strategy])
    model = spec.build(bundle, options, setup.train_rows)
    stage = SFTStage(
        max_steps=sizes.warmup + sizes.steps, batch_size=sizes.batch_size, learning_rate=sizes.learning_rate
    )
    with tempfile.TemporaryDirectory() as out:
        run_sft(
            model,
            bundle.processor,
            setup.train_rows,
            stage,
            Path(out),
            seed,
            progress=progress,
            label=f"perf suite {strategy}",
            extra_callbacks=(timer,),
            optimizer=spec.optimizer(model, options, stage) if spec.optimizer else None,
        )


def plain_sft(setup: Setup, strategy: str, sizes: SFTSizes, seed: int, timer) -> None:
    """The plain Trainer script with `strategy` set by hand, stamped by `timer`."""
    from transformers import set_seed

    set_seed(seed)
    with tempfile.TemporaryDirectory() as out:
        plain_module().train(
            str(setup.model_dir),
            setup.train_rows,
            strategy,
            sizes.warmup + sizes.steps,
            sizes.batch_size,
            seed,
            out,
            learning_rate=sizes.learning_rate,
            callbacks=(timer,),
        )


def measured(run, warmup: int) -> dict:
    """`run(timer)` with its steps timed and split (`common.step_parts`): steady step times, their parts, and the
    loss of every step (warm-up included, to compare the two sides' computations)."""
    with step_parts() as (totals, losses):
        timer = step_timer(totals)
        run(timer)
    return {"times": timer.steady(warmup), "parts": timer.steady_parts(warmup), "losses": losses}


def sft_child(setup: Setup, strategy: str, side: str, sizes: SFTSizes, seed: int) -> dict:
    """One side measured in a fresh interpreter (`python -m mllmtune.world.perf.overhead`): see `measured`.

    In one process, each run starts from the allocator state and caches the runs before it left; run that way, the
    same code on the same model read a `full` ratio of 0.955 in one run of the harness and 1.120 (1.102-1.127) in
    the next."""
    from mllmtune.world.perf.common import run_child

    return run_child("mllmtune.world.perf.overhead", [child_args(setup, strategy, side, sizes, seed)])


def child_args(setup: Setup, strategy: str, side: str, sizes: SFTSizes, seed: int) -> str:
    """What the child is told (JSON): enough to rebuild the parent's model and rows (`child_setup`)."""
    args = {"model": str(setup.model_dir), "size": setup.size_name, "rows": len(setup.train_rows)}
    return json.dumps(args | {"strategy": strategy, "side": side, "seed": seed, "sizes": asdict(sizes)})


def child_setup(args: dict) -> tuple[Setup, SFTSizes]:
    """The parent's model, training rows (same examples, same order) and sizes, from `child_args`."""
    from mllmtune.world.perf.common import rows_for

    rows = rows_for(args["size"], "train", args["rows"])
    return Setup(Path(args["model"]), "", rows, [], args["size"]), SFTSizes(**args["sizes"])


def sft_overhead(setup: Setup, sizes: SFTSizes, repeats: int, seed: int, progress=None) -> dict[str, dict[str, list]]:
    """Per strategy, one value per repeat of: each side's median step time (`suite`, `plain`), its median seconds
    per step in batch fetching and callbacks (`suite host`, `plain host`: where the suite's own code runs) and in
    forward and backward (`suite compute`, `plain compute`), and the largest gap between the two sides' step losses
    (`loss gap`: 0 when both computed the same). Each side runs in its own process; sides alternate order between
    repeats, so a slow drift of the shared machine's load does not land on one side."""
    keys = ["suite", "plain", "suite host", "plain host", "suite compute", "plain compute", "loss gap"]
    out: dict[str, dict[str, list]] = {s: {k: [] for k in keys} for s in SFT_STRATEGIES}
    task = progress.add_task("suite overhead", total=repeats * 2 * len(SFT_STRATEGIES)) if progress else None
    for r in range(repeats):
        for strategy in SFT_STRATEGIES:
            losses = {}
            for side in ("plain", "suite") if r % 2 == 0 else ("suite", "plain"):
                if progress:
                    progress.update(task, description=f"suite overhead: {strategy}, {side} (repeat {r + 1})")
                res = sft_child(setup, strategy, side, sizes, seed)
                parts = res["parts"]
                host = [d + c for d, c in zip(parts["data"], parts["callbacks"], strict=True)]
                out[strategy][side].append(statistics.median(res["times"]))
                out[strategy][f"{side} host"].append(statistics.median(host))
                out[strategy][f"{side} compute"].append(statistics.median(parts["compute"]))
                losses[side] = res["losses"]
                if progress:
                    progress.advance(task)
            out[strategy]["loss gap"].append(loss_gap(losses["suite"], losses["plain"]))
    if progress:
        progress.remove_task(task)
    return out


def loss_gap(a: list[float], b: list[float]) -> float:
    """The largest difference between two runs' step losses; infinite when they ran different numbers of steps."""
    if len(a) != len(b) or not a:
        return math.inf
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def _sft_main(args: dict) -> dict:
    """The child's side: rebuild the rows the parent measured on, train one side, return its steady step times.

    The suite side keeps its live progress display (on stderr), as `mllmtune train` has one."""
    from rich.console import Console

    from mllmtune.runs.train import make_progress
    from mllmtune.runtime import setup as runtime_setup

    runtime_setup()
    setup, sizes = child_setup(args)
    strategy, seed = args["strategy"], args["seed"]
    if args["side"] == "plain":
        return measured(lambda timer: plain_sft(setup, strategy, sizes, seed, timer), sizes.warmup)
    with make_progress(Console(stderr=True)) as progress:
        return measured(lambda timer: suite_sft(setup, strategy, sizes, seed, progress, timer), sizes.warmup)


@dataclass
class GRPOSizes:
    steps: int = 8
    warmup: int = 1
    num_generations: int = 4
    batch_size: int = 16  # completions per step
    max_completion_length: int = 64
    # SFT steps on structured answers before either side runs (0: the base as it is). The reflection re-reads only
    # completions that reason, and a base that rarely writes the template would leave the ratio measuring no
    # reflection; a short cold start, as `stage.cold_start` gives EMO-R3 recipes, makes the policy reason.
    cold_start_steps: int = 40


def grpo_stage(sizes: GRPOSizes, reflective: bool):
    """The two stages compared: identical but for the reflective reward weights (0 drops the term and its query)."""
    from mllmtune.stages.grpo import GRPOStage

    rewards = {"accuracy": 0.8, "format": 0.1, "coherence": 0.05, "consistency": 0.05}
    if not reflective:
        rewards |= {"accuracy": 0.9, "coherence": 0.0, "consistency": 0.0}
    return GRPOStage(
        name="grpo",
        template="emo-r3",
        num_generations=sizes.num_generations,
        batch_size=sizes.batch_size,
        max_steps=sizes.warmup + sizes.steps,
        max_completion_length=sizes.max_completion_length,
        learning_rate=1e-5,
        logging_steps=1,
        rewards=rewards,
    )


def count_queries(counter: dict):
    """Wrap `rewards.policy_asker` so every reflective query is counted and timed (how much reflection the run really
    did, and what it cost inside the step)."""
    import time

    from mllmtune.emo_r3 import rewards

    original = rewards.policy_asker

    def counting(*args, **kwargs):
        ask = original(*args, **kwargs)

        def counted(queries):
            counter["queries"] = counter.get("queries", 0) + len(queries)
            start = time.perf_counter()
            try:
                return ask(queries)
            finally:
                counter["seconds"] = counter.get("seconds", 0.0) + time.perf_counter() - start

        return counted

    return original, counting


def grpo_run(setup: Setup, sizes: GRPOSizes, reflective: bool, seed: int, progress) -> tuple[float, int, float]:
    """(median steady step time, reflective queries asked, seconds spent asking them per step) of one GRPO run of
    the suite's stage; the queries and their seconds count every step, warm-up included."""
    from transformers import set_seed

    from mllmtune.emo_r3 import rewards
    from mllmtune.models.bundle import load_bundle
    from mllmtune.stages.grpo import run_grpo

    set_seed(seed)
    bundle = load_bundle(str(setup.model_dir))
    bundle.model.requires_grad_(True)  # strategy `full`
    timer, counter = step_timer(), {}
    original, counting = count_queries(counter)
    rewards.policy_asker = counting
    try:
        with loop_callback(timer), tempfile.TemporaryDirectory() as out:
            stage = grpo_stage(sizes, reflective)
            label = f"perf {'emo-r3' if reflective else 'grpo'}"
            run_grpo(bundle.model, bundle.processor, setup.train_rows, stage, Path(out), seed, progress, label)
    finally:
        rewards.policy_asker = original
    per_step = counter.get("seconds", 0.0) / (sizes.warmup + sizes.steps)
    return statistics.median(timer.steady(sizes.warmup)), counter.get("queries", 0), per_step


def cold_started(setup: Setup, sizes: GRPOSizes, folder: Path, seed: int, progress) -> Setup:
    """`setup` with its model replaced by a copy trained `sizes.cold_start_steps` SFT steps on structured answers
    written from the rows' ground-truth cues (the stages' own `cold_start_examples`), saved under `folder`."""
    from dataclasses import replace

    from transformers import set_seed

    from mllmtune.models.bundle import load_bundle
    from mllmtune.stages.grpo import cold_start_examples
    from mllmtune.stages.sft import SFTStage, run_sft

    if sizes.cold_start_steps <= 0:
        return setup
    set_seed(seed)
    bundle = load_bundle(str(setup.model_dir))
    bundle.model.requires_grad_(True)
    stage = SFTStage(max_steps=sizes.cold_start_steps, batch_size=16, learning_rate=3e-4, logging_steps=10)
    examples = cold_start_examples(setup.train_rows, grpo_stage(sizes, True))
    with tempfile.TemporaryDirectory() as out:
        run_sft(bundle.model, bundle.processor, examples, stage, Path(out), seed, progress, "perf cold start")
    bundle.model.save_pretrained(folder)
    bundle.processor.save_pretrained(folder)
    note = f"{setup.source}, cold-started {sizes.cold_start_steps} SFT steps on structured answers"
    return replace(setup, model_dir=folder, source=note)


def reflection_overhead(setup: Setup, sizes: GRPOSizes, repeats: int, seed: int, progress) -> dict[str, list]:
    """Per repeat, the median steady step time of plain GRPO and of EMO-R3 (alternating which runs first) and the
    reflective queries EMO-R3 asked; both from the same policy (`setup`'s model, cold-started when the sizes say)."""
    out: dict[str, list] = {"grpo": [], "emo-r3": [], "queries": [], "reflection_s": []}
    for r in range(repeats):
        for reflective in (False, True) if r % 2 == 0 else (True, False):
            step, queries, asking = grpo_run(setup, sizes, reflective, seed, progress)
            out["emo-r3" if reflective else "grpo"].append(step)
            if reflective:
                out["queries"].append(queries)
                out["reflection_s"].append(asking)
    return out


if __name__ == "__main__":
    print(json.dumps(_sft_main(json.loads(sys.argv[1]))), flush=True)
