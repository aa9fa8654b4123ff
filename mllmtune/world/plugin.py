"""The embedded world as a plug-in: what it adds to the suite, through the registries any plug-in uses.

Declared in pyproject.toml (`[project.entry-points."mllmtune.plugins"] world = "mllmtune.world.plugin:register"`);
`mllmtune.plugins.load` calls `register`. It adds:

- the model id ``world`` (``world:micro`` for the small build), built and cached on first use;
- the data source ``source: world``: EmoScenes rows, each with answers written from its ground-truth cues
  (`reasoning`), which GRPO's cold start trains on;
- its five benchmarks (`mllmtune/world/benchmarks.py`), whose emotion sets also check reasoning steps;
- the recipe defaults: a recipe that names no model, data or benchmarks runs on the world;
- the commands ``mllmtune world build|info`` and ``mllmtune perf``.

Registering imports nothing heavy: `mllmtune --help` stays fast.
"""

from __future__ import annotations

TARGETS = ["emoscenes-photo", "emoscenes-art", "emoscenes-web"]
RETENTION = ["world-general"]
ALSO = ["world-emotion-knowledge"]  # the world's general sets that hold target-domain items: beside F, not in it


def resolve_model(size: str | None) -> tuple[str, str]:
    """``world`` / ``world:SIZE``: the base model folder (built on first use) and the world's version."""
    from mllmtune.world.build import ensure_world

    world = ensure_world(size)
    return str(world.model_dir), world.version


def recipe_defaults(data: dict) -> dict:
    """A recipe without a model, data or benchmarks runs on the world; the world's retention set brings its
    target-domain general set along, reported beside F."""
    data = dict(data)
    model = data.get("model")
    if model is None or (isinstance(model, dict) and "id" not in model):
        data["model"] = {"id": "world", **(model or {})}
    data.setdefault("data", {"source": "world"})
    ev = data.get("eval")
    if ev is None or isinstance(ev, dict):
        ev = dict(ev or {})
        ev.setdefault("target", list(TARGETS))
        ev.setdefault("retention", list(RETENTION))
        if (
            ev.get("also") is None
            and isinstance(ev["retention"], list)
            and set(RETENTION) & set(map(str, ev["retention"]))
        ):
            ev["also"] = list(ALSO)
        data["eval"] = ev
    return data


def register() -> None:
    from mllmtune import plugins
    from mllmtune.config import defaults
    from mllmtune.data import registry
    from mllmtune.evaluation import benchmarks
    from mllmtune.models.bundle import register_model_id
    from mllmtune.world.benchmarks import BENCHMARKS
    from mllmtune.world.data import WorldData, load_rows

    register_model_id("world", resolve_model)
    registry.register(registry.DataSource("world", WorldData, load_rows))
    for bench in BENCHMARKS:
        benchmarks.register(bench)
    defaults.register(recipe_defaults)
    plugins.register_commands(_attach_commands)


def _attach_commands(app, command, console) -> None:
    from mllmtune.world.cli import attach

    attach(app, command, console)
