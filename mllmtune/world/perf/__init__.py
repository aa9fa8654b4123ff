"""`mllmtune perf`: what the suite costs over the libraries it drives, measured side by side in one run.

Figures (each the median over `repeats` runs, with the min and max): SFT step time through the suite against a plain
`transformers.Trainer` script (`benchmarks/perf/plain_trainer.py`) for full, lora and freeze; EMO-R3's GRPO step
against plain GRPO; peak memory of full, lora and qlora on a ~150 M random world-architecture model; start-up of
`mllmtune --help`; evaluation seconds per 1,000 samples and report seconds per 10,000 records. They land in
`results/perf.csv`, and `mllmtune report` shows them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mllmtune.report.perf import TARGETS, Row, print_table, write_csv
from mllmtune.world.perf.overhead import GRPOSizes, SFTSizes


@dataclass
class PerfSizes:
    sft: SFTSizes = field(default_factory=SFTSizes)
    grpo: GRPOSizes = field(default_factory=GRPOSizes)
    mem_steps: int = 3
    mem_batch: int = 4
    eval_samples: int = 256
    report_records: int = 10_000
    startup_repeats: int = 5

    @classmethod
    def quick(cls) -> PerfSizes:
        return cls(
            SFTSizes(steps=3, warmup=1, batch_size=4),
            GRPOSizes(steps=1, warmup=1, batch_size=4, num_generations=2, max_completion_length=8, cold_start_steps=2),
            mem_steps=2,
            mem_batch=2,
            eval_samples=16,
            report_records=300,
            startup_repeats=2,
        )


def _row(section: str, figure: str, unit: str, values: list[float], note: str = "") -> Row:
    return Row(section, figure, unit, values, TARGETS.get(figure), note)


def _ratios(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


def _ms(seconds: list[float]) -> list[float]:
    return [1000 * s for s in seconds]


def _added(sides: dict[str, list[float]]) -> list[float]:
    """Per repeat, the suite's batches+callbacks seconds less the plain script's, over the plain step time."""
    return [(s - p) / t for s, p, t in zip(sides["suite host"], sides["plain host"], sides["plain"], strict=True)]


HOST_NOTE = "median per step of fetching and collating batches plus the Trainer's callbacks"


def run_perf(
    results: Path,
    repeats: int = 3,
    quick: bool = False,
    console=None,
    only: list[str] | None = None,
    memory_dtype: str = "float32",
):
    """Measure every figure (or the sections in `only`), write `results/perf.csv`, print the table; returns rows.

    `memory_dtype` is what the memory section loads its model in (the other sections keep float32)."""
    from mllmtune.runs.train import make_progress
    from mllmtune.world.build import current_size
    from mllmtune.world.perf import common, growth, memory, overhead

    log = console.print if console else print
    sizes = PerfSizes.quick() if quick else PerfSizes()
    sections = only or ["sft", "grpo", "memory", "startup", "growth"]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        n_train = max(64, sizes.sft.batch_size * (sizes.sft.steps + sizes.sft.warmup))
        setup = common.prepare(work, "micro" if quick else current_size(), n_train, sizes.eval_samples)
        log(f"perf on {setup.source}: {common.param_count(setup.model_dir):,} parameters; {repeats} repeat(s)")
        with make_progress(console) if console else _null() as progress:
            if "sft" in sections:
                log("suite overhead: SFT step time, suite against a plain Trainer script")
                sft = overhead.sft_overhead(setup, sizes.sft, repeats, 0, progress)
                b = sizes.sft.batch_size
                for name, sides in sft.items():
                    note = f"{setup.source}; batch {b}, {sizes.sft.steps} timed steps after {sizes.sft.warmup}"
                    rows += [
                        _row("sft", f"{name} suite step", "s", sides["suite"], note),
                        _row("sft", f"{name} plain step", "s", sides["plain"], note),
                        _row("sft", f"{name} suite samples/s", "1/s", [b / t for t in sides["suite"]]),
                        _row("sft", f"{name} plain samples/s", "1/s", [b / t for t in sides["plain"]]),
                        _row("sft", f"{name} suite/plain", "x", _ratios(sides["suite"], sides["plain"])),
                        _row("sft", f"{name} suite batches+callbacks", "ms", _ms(sides["suite host"]), HOST_NOTE),
                        _row("sft", f"{name} plain batches+callbacks", "ms", _ms(sides["plain host"]), HOST_NOTE),
                        _row(
                            "sft",
                            f"{name} suite-plain batches+callbacks, share of a step",
                            "share",
                            _added(sides),
                            "what the suite's own code adds per step, over the plain step time",
                        ),
                        _row(
                            "sft",
                            f"{name} suite/plain forward+backward",
                            "x",
                            _ratios(sides["suite compute"], sides["plain compute"]),
                        ),
                        _row(
                            "sft",
                            f"{name} largest step-loss gap, suite vs plain",
                            "loss",
                            sides["loss gap"],
                            "0: both sides computed the same losses, step for step",
                        ),
                    ]
            if "grpo" in sections:
                log("reflection overhead: GRPO step time, EMO-R3 against plain GRPO")
                policy = overhead.cold_started(setup, sizes.grpo, work / "cold-started", 0, progress)
                g = overhead.reflection_overhead(policy, sizes.grpo, repeats, 0, progress)
                gs = sizes.grpo
                note = f"{policy.source}; G={gs.num_generations}, {gs.batch_size} per step, "
                note += f"<= {gs.max_completion_length} tokens"
                completions = gs.batch_size * (gs.steps + gs.warmup)
                rows += [
                    _row("grpo", "grpo step", "s", g["grpo"], note),
                    _row("grpo", "emo-r3 step", "s", g["emo-r3"], note),
                    _row("grpo", "emo-r3/grpo", "x", _ratios(g["emo-r3"], g["grpo"])),
                    _row(
                        "grpo",
                        "reflective queries per completion",
                        "share",
                        [q / (2 * completions) for q in g["queries"]],
                        "completions with reasoning to re-read; at 0 the ratio measures no reflection",
                    ),
                    _row("grpo", "reflection seconds per emo-r3 step", "s", g["reflection_s"], "warm-up included"),
                    _row(
                        "grpo",
                        "reflection share of an emo-r3 step",
                        "share",
                        _ratios(g["reflection_s"], g["emo-r3"]),
                        "reflection's seconds over the step's: its cost, free of the runs' other differences",
                    ),
                ]
        if "memory" in sections:
            log("memory: peak RSS of full, lora and qlora SFT steps, one subprocess each")
            size = common.SIZES["micro"] if quick else common.PERF_SIZE
            model_dir = common.random_model(work / "perf-size", size, setup.train_rows)
            n = common.param_count(model_dir)
            mem = memory.memory_figures(model_dir, repeats, sizes.mem_steps, sizes.mem_batch, log, memory_dtype)
            held = {k: [r["train_peak_mb"] - r["import_mb"] for r in v] for k, v in mem.items()}
            note = f"random world-architecture model, {n / 1e6:.0f} M parameters, {memory_dtype}"
            note += f"; batch {sizes.mem_batch}"
            steps = sizes.mem_steps
            for (name, heap), runs in mem.items():
                if heap != "default":  # the same steps with another heap setting
                    suffix = memory.HEAPS[heap].suffix
                    rows += [
                        _row("memory", f"{name} train peak over imports{suffix}", "MB", held[name, heap], note),
                        _row("memory", f"{name} train seconds{suffix}", "s", [r["train_s"] for r in runs]),
                    ]
                    continue
                rows += [
                    _row("memory", f"{name} train peak over imports", "MB", held[name, heap], note),
                    _row("memory", f"{name} train peak", "MB", [r["train_peak_mb"] for r in runs], "whole process"),
                    _row("memory", f"{name} load peak", "MB", [r["load_peak_mb"] for r in runs]),
                    _row(
                        "memory", f"{name} loaded over imports", "MB", [r["loaded_mb"] - r["import_mb"] for r in runs]
                    ),
                    _row("memory", f"{name} train seconds", "s", [r["train_s"] for r in runs], f"{steps} steps"),
                ]
            heaps = list(dict.fromkeys(heap for _, heap in mem))
            for heap in heaps:
                suffix = memory.HEAPS[heap].suffix
                for a, b in (("lora", "full"), ("qlora", "lora")):
                    if (a, heap) in held and (b, heap) in held:
                        ratios = _ratios(held[a, heap], held[b, heap])
                        target = TARGETS[f"{a}/{b}"]  # every heap setting holds the base figure's bound
                        rows.append(Row("memory", f"{a}/{b}{suffix}", "x", ratios, target, "over imports"))
            kept = memory.HEAPS["kept"].suffix.removeprefix(", ")
            for name, heap in mem:  # each setting's step time against glibc's heap as it comes
                if heap != "kept" and (name, "kept") in mem:
                    seconds = [[r["train_s"] for r in mem[name, h]] for h in (heap, "kept")]
                    figure = f"{name} train time{memory.HEAPS[heap].suffix}/{kept}"
                    rows.append(_row("memory", figure, "x", _ratios(*seconds)))
        if "startup" in sections:
            st = growth.startup(max(repeats, sizes.startup_repeats))
            rows += [
                _row("startup", "mllmtune --help", "s", st["help"]),
                _row("startup", "python -c pass", "s", st["pass"]),
                _row(
                    "startup", "--help minus python", "s", [a - b for a, b in zip(st["help"], st["pass"], strict=True)]
                ),
            ]
        if "growth" in sections:
            n_eval, n_rep = len(setup.test_rows), sizes.report_records
            ev = [growth.eval_seconds(setup.model_dir, setup.test_rows) * 1000 / n_eval for _ in range(repeats)]
            rep = [growth.report_seconds(n_rep) * 10_000 / n_rep for _ in range(repeats)]
            rows += [
                _row("growth", "eval per 1,000 samples", "s", ev, f"measured on {n_eval} samples, batch 64"),
                _row("growth", "report per 10,000 records", "s", rep, f"measured on {n_rep} records, 50 recipes"),
            ]
    from mllmtune.runs import store

    path = write_csv(rows, store.Results(results).perf)
    if console:
        print_table(rows, console)
        log(f"wrote {path}")
    return rows


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
