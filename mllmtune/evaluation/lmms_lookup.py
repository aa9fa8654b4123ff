"""Finding lmms-eval (0.7.3) tasks and checking them before a run, without loading a model.

The adapter (`mllmtune.evaluation.lmms`) and the benchmark registry (`mllmtune.evaluation.lmms_tasks`) both need
lmms-eval's task index, so it lives here, apart from the model: importing lmms-eval, the index of task names (its
own tasks merged with a local task folder), expanding a group or tag to its tasks, and the checks that fail in one
line on what lmms-eval reports late (an unknown name, an unsupported output type, a missing data file, a hub data
set while offline), plus the content fingerprint a baseline is reused by.

lmms-eval is imported lazily (`mllmtune --help` never loads it) and the process-wide effects of that import are
contained: it adds a blanket `ignore` warning filter (lmms_eval/utils.py) and sends loguru to stdout
(lmms_eval/models/__init__.py).
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import json
import os
import socket
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from mllmtune.errors import UserError

PREFIX = "lmms:"
INSTALL = "pip install --no-deps lmms-eval==0.7.3 && pip install -e '.[lmms]' (or: make install)"
# lmms_eval/utils.py _LOCAL_BUILDERS (+ imagefolder): builders whose data_files are local (relative to the yaml).
LOCAL_BUILDERS = frozenset({"csv", "json", "parquet", "text", "pandas", "arrow", "imagefolder"})
SUPPORTED_OUTPUTS = ("generate_until", "multiple_choice", "loglikelihood")
_state: dict = {}  # the loguru set-up done, lmms-eval's own task index


def bare(name: str) -> str:
    return name[len(PREFIX) :] if name.startswith(PREFIX) else name


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def load():
    """Import lmms-eval; a missing install (or a missing runtime import of it) is one line with the fix."""
    import importlib

    try:
        with warnings.catch_warnings():  # lmms_eval/utils.py runs warnings.filterwarnings("ignore") at import
            lmms_eval = importlib.import_module("lmms_eval")
            for sub in ("api.instance", "api.model", "api.task", "evaluator", "evaluator_utils", "tasks", "utils"):
                importlib.import_module(f"lmms_eval.{sub}")
    except ImportError as exc:
        raise UserError(f"lmms-eval is not installed ({exc.name or exc} missing); install: {INSTALL}") from None
    if "logger" not in _state:  # to the current stderr (the CLI's display owns stdout), warnings and up
        from loguru import logger

        logger.remove()
        _state["logger"] = logger.add(
            lambda msg: sys.stderr.write(msg), level="WARNING", format="lmms-eval: {message}"
        )
    return lmms_eval


def _defaults() -> dict:
    """lmms-eval's own task index (~2,000 names, ~10 s to build from its yaml files), cached per version."""
    if "defaults" not in _state:
        from importlib.metadata import version

        lmms_eval = load()
        root = Path(lmms_eval.tasks.__file__).parent
        home = Path(os.environ.get("MLLMTUNE_HOME", Path.home() / ".cache" / "mllmtune")).expanduser()
        cache = home / "lmms" / f"task-index-{version('lmms-eval')}-{hashlib.sha256(bytes(root)).hexdigest()[:8]}.json"
        try:
            _state["defaults"] = json.loads(cache.read_text())
        except (OSError, ValueError):
            with warnings.catch_warnings():
                index = lmms_eval.tasks.TaskManager(include_path=str(root), include_defaults=False).task_index
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(index))
            os.replace(tmp, cache)
            _state["defaults"] = index
    return _state["defaults"]


def index(names: list[str], include_path: str | None) -> dict:
    """Task name -> index entry. A local task shadows a built-in one of its name (in TaskManager.initialize_tasks
    the built-ins win), so a local copy of `pope` is what `lmms:pope` runs."""
    lmms_eval = load()
    local: dict = {}
    if include_path:
        if not Path(include_path).is_dir():
            raise UserError(f"eval.lmms_include_path: {include_path} is not a folder of lmms-eval task yaml files")
        with warnings.catch_warnings():
            local = lmms_eval.tasks.TaskManager(include_path=str(include_path), include_defaults=False).task_index
    return local if all(n in local for n in names) else {**_defaults(), **local}


def manager(index: dict):
    """A TaskManager over `index` (it has no public way to merge two indexes)."""
    from lmms_eval.tasks import TaskManager

    class Indexed(TaskManager):
        def initialize_tasks(self, include_path=None, include_defaults=True):
            return index

    return Indexed(include_defaults=False)


def leaves(name: str, index: dict, seen: set | None = None) -> Iterator[tuple[str, dict]]:
    """(task, merged yaml config with `!function`s unloaded) of every task under a task, tag or group name."""
    from lmms_eval.utils import load_yaml_config  # resolves `include` and makes local data_files absolute

    seen = set() if seen is None else seen
    if name in seen or name not in index:
        return
    seen.add(name)
    entry = index[name]
    if entry["type"] in ("task", "python_task"):
        yield name, load_yaml_config(yaml_path=entry["yaml_path"], mode="simple")
        return
    subtasks = entry["task"] if entry["type"] == "tag" else load_yaml_config(entry["yaml_path"], mode="simple")["task"]
    for sub in subtasks:
        if isinstance(sub, str):
            yield from leaves(sub, index, seen)
        elif isinstance(sub, dict) and "task" in sub:
            base = dict(next(leaves(sub["task"], index, set()), (None, {}))[1])
            yield sub["task"], {**base, **sub}


def _data_files(cfg: dict) -> list[str]:
    stack, out = [(cfg.get("dataset_kwargs") or {}).get("data_files") or []], []
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list | tuple):
            stack.extend(item.values() if isinstance(item, dict) else item)
        elif isinstance(item, str) and "://" not in item:
            out.append(item)
    return sorted(out)


def _is_local(cfg: dict) -> bool:
    path = cfg.get("dataset_path")
    return path in LOCAL_BUILDERS or (isinstance(path, str) and os.path.exists(path))


def _offline() -> bool:
    """The hub's own offline switches, or no TCP connection to the hub (or the HTTPS proxy) within 2 s."""
    if _flag("HF_HUB_OFFLINE") or _flag("HF_DATASETS_OFFLINE"):
        return True
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlsplit(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=2).close()
        return False
    except (OSError, ValueError):
        return True


def _hub_cached(repo: str) -> bool:
    from huggingface_hub import constants

    return (Path(constants.HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}").is_dir()


def known(name: str, index: dict) -> None:
    if name not in index:
        close = difflib.get_close_matches(name, list(index), n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(PREFIX + c for c in close)}" if close else "no close match"
        raise UserError(f"{PREFIX}{name}: unknown lmms-eval task; {hint}")


def check_tasks(names: list[str], include_path: str | None) -> None:
    """Fail in one line on what lmms-eval reports late or retries: a missing install, an unknown name, an output
    type we cannot answer, a missing local data file, a hub data set while offline (Task.download retries under
    tenacity, 5 tries: ~8 s with HF_HUB_OFFLINE=1, ~74 s of connection retries without it, then a RetryError)."""
    names = [bare(n) for n in names]
    entries = index(names, include_path)
    offline = None
    for name in names:
        known(name, entries)
        for task, cfg in leaves(name, entries):
            if (kind := cfg.get("output_type", "generate_until")) not in SUPPORTED_OUTPUTS:
                raise UserError(f"{PREFIX}{task}: output_type {kind} is not supported; supported: {SUPPORTED_OUTPUTS}")
            if _is_local(cfg):
                if missing := [f for f in _data_files(cfg) if not glob.glob(f)]:
                    raise UserError(f"{PREFIX}{task}: data file {missing[0]} not found")
                continue
            offline = _offline() if offline is None else offline
            repo = str(cfg.get("dataset_path"))
            if offline and not (_flag("HF_HUB_OFFLINE") and _hub_cached(repo)):
                cached = " (or set HF_HUB_OFFLINE=1 to use its cached copy)" if _hub_cached(repo) else ""
                raise UserError(
                    f"{PREFIX}{task}: its data set {repo} is on the Hugging Face Hub and this machine is offline; put "
                    f"a local copy (dataset_path: parquet, dataset_kwargs.data_files) in a task folder and point the "
                    f"recipe key eval.lmms_include_path at it{cached}"
                )


def _yaml_files(path: Path) -> set[Path]:
    """A yaml, the yamls it includes (recursively) and the .py files beside each (where `!function`s live)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    out = {path, *path.parent.glob("*.py")}
    raw = yaml.load(path.read_text(), Loader=Loader)
    includes = (raw.get("include") or []) if isinstance(raw, dict) else []
    for inc in [includes] if isinstance(includes, str) else includes:
        inc = Path(inc) if os.path.isfile(inc) else path.parent / inc
        if inc.is_file() and inc not in out:
            out |= _yaml_files(inc)
    return out


def task_fingerprint(name: str, include_path: str | None) -> str:
    """A hash of the lmms-eval version, the task's yaml and Python files and its local data files (path, size,
    mtime; a hub set is named, with its revision, in the yaml): a baseline is reused only for the same content."""
    from importlib.metadata import version

    name = bare(name)
    entries = index([name], include_path)
    known(name, entries)
    h = hashlib.sha256(f"lmms-eval {version('lmms-eval')}\0".encode())
    tasks = sorted(leaves(name, entries), key=lambda tc: tc[0])
    yamls = {Path(entries[t]["yaml_path"]) for t, _ in tasks if t in entries} | {Path(entries[name]["yaml_path"])}
    files = set().union(*(_yaml_files(y) for y in yamls if y.is_file()))
    for path in sorted(files):
        h.update(f"{path}\0".encode() + path.read_bytes())
    for _, cfg in tasks:
        for f in sorted({g for pattern in _data_files(cfg) for g in glob.glob(pattern)}) if _is_local(cfg) else []:
            st = os.stat(f)
            h.update(f"{os.path.abspath(f)}:{st.st_size}:{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:12]
