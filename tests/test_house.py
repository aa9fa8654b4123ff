"""The house's rules: no import cycles in the package, and the embedded world is a plug-in the core never imports.

Imports are read from the source (every `import`, at module level or inside a function, except those under
`if TYPE_CHECKING:`), so a lazy import inside a function counts like any other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mllmtune"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (`from pkg import submodule` is an edge to the submodule)."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skipped = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                found = owner(target) if target.startswith("mllmtune") else None
                if found and found != name:
                    graph[name].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_the_package():
    assert cycles(import_graph()) == []


def test_only_the_world_imports_the_world():
    importers = sorted(
        m
        for m, deps in import_graph().items()
        if not m.startswith("mllmtune.world")
        and any(d == "mllmtune.world" or d.startswith("mllmtune.world.") for d in deps)
    )
    assert importers == []
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    assert 'world = "mllmtune.world.plugin:register"' in pyproject  # the one way in: the plug-in entry point


CORE_WITHOUT_WORLD = textwrap.dedent(
    """
    import sys, warnings
    sys.modules["mllmtune.world"] = None  # any import of it, or of a module under it, fails
    warnings.simplefilter("ignore")
    from pathlib import Path
    from mllmtune import plugins
    assert "world" not in plugins.load()
    from mllmtune.config.recipe import load_recipe
    from mllmtune.errors import UserError
    import yaml

    root = Path(sys.argv[1])
    recipe = yaml.safe_load(Path(sys.argv[2]).read_text())
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    bare = root / "bare.yaml"
    bare.write_text("name: x\\nstrategy: {name: lora}\\n")
    try:
        load_recipe(bare)
        raise SystemExit("a recipe without model, data or benchmarks validated with no plug-in to default them")
    except UserError as exc:
        print("bare:", exc)
    r = load_recipe(path)
    from rich.console import Console
    from mllmtune.runs.train import train
    record = train(r, root / "results", Console(quiet=True))
    assert record.status == "success", record.error
    from mllmtune.report.write import run_report
    report = run_report(root / "results", None, Console(quiet=True))
    row = report.leaderboard.iloc[0]
    assert row["recipe"] == "core-only" and row["E"] == row["E"], report.leaderboard.to_string()  # E is a number
    assert (root / "results" / "report" / "leaderboard.csv").is_file()
    assert not [m for m, mod in sys.modules.items() if m.startswith("mllmtune.world") and mod is not None]
    print("ok", record.run_id, sorted(record.scores))
    """
)


def _image_folder(root: Path, offset: int) -> Path:
    """Two labels, three images each, distinct from any other folder made with another offset."""
    from PIL import Image

    for i, label in enumerate(["joy", "fear"] * 3):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (40 * i + offset, 7 * offset, 200 - i)).save(root / label / f"{i}.png")
    return root


def test_the_core_runs_with_the_world_unimportable(tmp_path):
    """Recipe validation, a tiny-model SFT step, evaluation on a declared benchmark and the report, in a fresh
    interpreter where `mllmtune.world` cannot be imported."""
    import yaml
    from tiny_families import save_tiny

    model = save_tiny("llava", tmp_path / "tiny-llava")
    train, test, general = (_image_folder(tmp_path / name, i) for i, name in enumerate(["train", "test", "general"]))

    recipe = {
        "name": "core-only",
        "model": {"id": str(model)},
        "data": {"source": "imagefolder", "path": str(train), "split": "all"},
        "strategy": {"name": "lora", "r": 2},
        "stage": {"name": "sft", "max_steps": 1, "batch_size": 2},
        "eval": {
            "datasets": {
                "folder": {"data": {"source": "imagefolder", "path": str(test), "split": "all"}},
                "general": {"data": {"source": "imagefolder", "path": str(general), "split": "all"}},
            },
            "target": ["folder"],
            "retention": ["general"],
            "limit": 2,
        },
    }
    (tmp_path / "given.yaml").write_text(yaml.safe_dump(recipe))
    done = subprocess.run(
        [sys.executable, "-c", CORE_WITHOUT_WORLD, str(tmp_path), str(tmp_path / "given.yaml")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ok " in done.stdout and "bare: " in done.stdout


def test_registries_name_what_they_know_and_refuse_a_second_meaning():
    from mllmtune.config.recipe import validate
    from mllmtune.errors import UserError
    from mllmtune.rewards import register as register_reward
    from mllmtune.stages.registry import STAGES, Stage
    from mllmtune.stages.registry import register as register_stage
    from mllmtune.stages.sft import SFTStage

    def fails(data: dict) -> str:
        try:
            validate({"name": "x", "strategy": {"name": "full"}} | data, "r.yaml")
        except UserError as exc:
            return str(exc)
        raise AssertionError(f"{data} validated")

    assert fails({"stage": {"name": "rlhf"}}) == "r.yaml: stage: unknown stage 'rlhf'; known: grpo, sft"
    assert "known: accuracy, coherence, consistency, format" in fails({"stage": {"name": "grpo", "rewards": {"x": 1}}})
    assert "unknown benchmark 'nope'; known: emoscenes-art" in fails({"eval": {"target": ["nope"]}})
    msg = fails({"eval": {"target": ["world-general"], "retention": ["world-general"]}})
    assert (
        msg
        == "r.yaml: eval: retention: 'world-general' is also named above; a set counts in E, in F or beside them, once"
    )
    register_stage(Stage("late", SFTStage, "mllmtune.stages.sft:run_sft"))
    try:
        assert "'late' was registered after the recipe schema was built" in fails({"stage": {"name": "late"}})
        with pytest.raises(ValueError, match="stage 'late' is registered twice"):
            register_stage(Stage("late", SFTStage, "elsewhere:run"))
    finally:
        STAGES.pop("late")
    with pytest.raises(ValueError, match="reward 'accuracy' is registered twice"):
        register_reward("accuracy")(lambda completions, **kw: [0.0] * len(completions))
