"""The recipes and suites the suite ships (`recipes/`, `benchmarks/`): found by name, copied to start from.

`mllmtune cp NAME DEST` follows torchtune's `tune cp`: a user copies a shipped file, edits the copy and runs it. A
name is a path (`recipes/qwen2.5-vl-3b/lora.yaml`), the path under `recipes/` or `benchmarks/` without `.yaml`
(`qwen2.5-vl-3b/lora`, `quick`), or a file name found once (`emo-r3-released` is a recipe and a suite: ambiguous).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from mllmtune.errors import UserError

FOLDERS = ("recipes", "benchmarks")


def roots() -> list[Path]:
    """Folders holding the shipped `recipes/` and `benchmarks/`: the working folder, then the suite's checkout."""
    found = []
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if any((root / f).is_dir() for f in FOLDERS) and root.resolve() not in [r.resolve() for r in found]:
            found.append(root)
    return found


def shipped() -> dict[str, Path]:
    """Every shipped YAML file by its name under its folder (`qwen2.5-vl-3b/lora`), recipes first."""
    files: dict[str, Path] = {}
    for root in roots():
        for folder in FOLDERS:
            for path in sorted((root / folder).rglob("*.yaml")):
                name = path.relative_to(root / folder).with_suffix("").as_posix()
                files.setdefault(f"{folder}/{name}", path)
    return files


def find(name: str) -> Path:
    """The shipped file `name` names; one line listing the candidates when it names none or several."""
    given = Path(name).expanduser()
    if given.suffix in (".yaml", ".yml") and given.is_file():
        return given
    files = shipped()
    bare = name.removesuffix(".yaml")
    matches = [
        path
        for key, path in files.items()
        if bare in (key, key.split("/", 1)[1]) or key.split("/", 1)[1].endswith("/" + bare)
    ]
    if len(matches) == 1:
        return matches[0]
    if matches:
        names = ", ".join(sorted(_short(files, m) for m in matches))
        raise UserError(f"cp: {name!r} names several shipped files: {names}; give one of them")
    raise UserError(f"cp: no shipped recipe or suite named {name!r}; `mllmtune ls recipes` lists them")


def _short(files: dict[str, Path], path: Path) -> str:
    return next(key.split("/", 1)[1] for key, p in files.items() if p == path)


def copy(name: str, dest: Path, force: bool = False) -> Path:
    """Copy shipped file `name` to `dest` (a file, or a folder that keeps the file's name). The header's command
    (`# mllmtune train --recipe PATH`, `# mllmtune bench PATH`) is rewritten to name the copy."""
    source = find(name)
    target = dest / source.name if dest.is_dir() else dest
    if target.exists() and not force:
        raise UserError(f"cp: {target} exists; pass --force to overwrite it")
    if not target.parent.is_dir():
        raise UserError(f"cp: folder {target.parent} does not exist")
    text = source.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    if lines:
        lines[0] = re.sub(
            r"^(# mllmtune (?:train --recipe|bench)) \S+", lambda m: f"{m.group(1)} {target}", lines[0], count=1
        )
    target.write_text("".join(lines), encoding="utf-8")
    shutil.copymode(source, target)
    return target
