"""The world's commands: `mllmtune world build|info` and `mllmtune perf` (attached by the world plug-in).

No `from __future__ import annotations` here: typer reads the options' types from the nested functions, whose
annotations name `ResultsOpt`, a local of `attach`.
"""

import json
from pathlib import Path
from typing import Annotated

import typer

from mllmtune.errors import UserError
from mllmtune.runtime import setup


def attach(app: typer.Typer, command, console) -> None:
    """Add the commands to the suite's typer app; `command(app, name)` wraps each (one-line errors, exit code 2)."""
    world_app = typer.Typer(
        no_args_is_help=True, help="The embedded offline world: data, tokenizer and tiny base model."
    )
    app.add_typer(world_app, name="world")
    ResultsOpt = Annotated[Path, typer.Option("--results", help="folder of the shared run table (runs.jsonl)")]

    @command(app)
    def perf(
        repeats: Annotated[int, typer.Option(min=1, help="runs per figure; each figure is their median")] = 3,
        quick: Annotated[bool, typer.Option("--quick", help="seconds-sized smoke run on the micro world")] = False,
        only: Annotated[
            list[str] | None, typer.Option(help="only these sections: sft, grpo, memory, startup, growth")
        ] = None,
        memory_dtype: Annotated[
            str, typer.Option(help="dtype the memory section loads its model in: float32, bfloat16 or float16")
        ] = "float32",
        results: ResultsOpt = Path("results"),
    ) -> None:
        """Measure the suite against plain baselines (step time, memory, start-up, growth) into RESULTS/perf.csv."""
        known = {"sft", "grpo", "memory", "startup", "growth"}
        if only and set(only) - known:
            raise UserError(
                f"--only: unknown section {sorted(set(only) - known)[0]!r}; known: {', '.join(sorted(known))}"
            )
        if memory_dtype not in ("float32", "bfloat16", "float16"):
            raise UserError(f"--memory-dtype: unknown dtype {memory_dtype!r}; known: float32, bfloat16, float16")
        from mllmtune.runs import store
        from mllmtune.world.perf import run_perf

        store.check_writable(results)
        setup()
        run_perf(results, repeats=repeats, quick=quick, console=console, only=only, memory_dtype=memory_dtype)

    @command(world_app, "build")
    def world_build(
        size: Annotated[
            str | None, typer.Option(help="default | micro (default: $MLLMTUNE_WORLD_SIZE, else default)")
        ] = None,
        force: Annotated[bool, typer.Option(help="rebuild even if cached")] = False,
    ) -> None:
        """Build (or rebuild) the embedded world; also happens automatically on first use."""
        import shutil

        from mllmtune.runs.train import make_progress
        from mllmtune.world.build import WORLD_SIZES, build_world, ensure_world, world_root

        if size is not None and size not in WORLD_SIZES:
            raise UserError(f"--size: unknown world size {size!r}; known: {', '.join(WORLD_SIZES)}")
        setup()
        with make_progress(console) as progress:
            if force:
                shutil.rmtree(world_root(size), ignore_errors=True)
                world = build_world(size, log=console.print, progress=progress)
            else:
                world = ensure_world(size, log=console.print, progress=progress)
        console.print(f"world ready: {world.root}")

    @command(world_app, "info")
    def world_info(size: Annotated[str | None, typer.Option(help="default | micro")] = None) -> None:
        """Where the world is cached and how it was built."""
        from mllmtune.world.build import world_root

        root = world_root(size)
        path = root / "build.json"
        if not path.is_file():
            console.print(f"not built yet: {root} (run `mllmtune world build`)")
            return
        info = json.loads(path.read_text())
        info.pop("spec", None)
        console.print_json(data={"root": str(root), **info})
