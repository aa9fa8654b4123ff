"""Standard retention benchmarks scored by lmms-eval on the model in memory.

lmms-eval (0.7.3) owns the task definitions: data, prompts, filters, per-item scoring and aggregation. The suite
owns the model: its requests run through the suite's own chat-template path (`mllmtune.data`), greedily, on the
model object already loaded, so a tuned model is scored without a reload or a second copy.

lmms-eval is imported lazily (`mllmtune --help` never loads it), and its process-wide side effects are contained:
its import installs a blanket `ignore` warning filter (lmms_eval/utils.py) and points loguru at stdout
(lmms_eval/models/__init__.py); `evaluate` reads RANK/WORLD_SIZE from the environment and would join collectives
in a multi-process launch, where only the main process scores. We call `lmms_eval.evaluator.evaluate` rather than
`simple_evaluate`, which would also barrier on an initialized process group and patch filelock's metaclass for the
whole process (`_enable_reentrant_filelocks`, which imports `filelock._api`, gone in filelock 4).
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import json
import os
import random
import socket
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

from mllmtune.errors import UserError

PREFIX = "lmms:"
INSTALL = "pip install --no-deps lmms-eval==0.7.3 && pip install -e '.[lmms]' (or: make install)"
# lmms_eval/utils.py `_LOCAL_BUILDERS`: data_files of these builders are local files (relative to the yaml's folder).
LOCAL_BUILDERS = frozenset({"csv", "json", "parquet", "text", "pandas", "arrow", "imagefolder"})
ID_FIELDS = ("question_id", "id", "qid", "sample_id")  # a doc's own id, in order of preference
SUPPORTED_OUTPUTS = ("generate_until", "multiple_choice", "loglikelihood")
DEFAULT_NEW_TOKENS = 1024  # lmms_eval/models/simple/llava_hf.py generate_until: max_new_tokens when a task sets none
_configured = False
_default_index: dict | None = None


def _bare(name: str) -> str:
    return name[len(PREFIX) :] if name.startswith(PREFIX) else name


def _load():
    """Import lmms-eval; a missing install (or a missing runtime import of it) is one line with the fix."""
    global _configured
    try:
        with warnings.catch_warnings():  # lmms_eval/utils.py runs warnings.filterwarnings("ignore") at import
            import importlib

            importlib.import_module("lmms_eval")
            import lmms_eval.api.task
            import lmms_eval.evaluator
            import lmms_eval.evaluator_utils
            import lmms_eval.tasks
            import lmms_eval.utils
    except ImportError as exc:
        raise UserError(f"lmms-eval is not installed ({exc.name or exc} missing); install it with: {INSTALL}") from None
    if not _configured:  # lmms_eval/models/__init__.py sends loguru to stdout; warnings go to stderr, like ours
        from loguru import logger

        logger.remove()
        logger.add(sys.stderr, level="WARNING", format="lmms-eval {level}: {message}")
        _configured = True
    return lmms_eval


def _home() -> Path:
    return Path(os.environ.get("MLLMTUNE_HOME", Path.home() / ".cache" / "mllmtune")).expanduser()


def _defaults() -> dict:
    """lmms-eval's own task index (~2,000 names; ~10 s to build), cached per lmms-eval version."""
    global _default_index
    if _default_index is None:
        from importlib.metadata import version

        lmms_eval = _load()
        root = Path(lmms_eval.tasks.__file__).parent
        tag = hashlib.sha256(str(root).encode()).hexdigest()[:8]
        cache = _home() / "lmms" / f"task-index-{version('lmms-eval')}-{tag}.json"
        try:
            _default_index = json.loads(cache.read_text())
        except (OSError, ValueError):
            with warnings.catch_warnings():
                _default_index = lmms_eval.tasks.TaskManager(include_path=str(root), include_defaults=False).task_index
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(_default_index))
            os.replace(tmp, cache)
    return _default_index


def _index(names: list[str], include_path: str | None) -> dict:
    """Task name -> lmms-eval index entry. A local task shadows a built-in one of the same name (the reverse of
    TaskManager.initialize_tasks, where the built-ins win), so a local copy of `pope` is what `lmms:pope` runs."""
    lmms_eval = _load()
    local: dict = {}
    if include_path:
        if not Path(include_path).is_dir():
            raise UserError(f"eval.lmms_include_path: {include_path} is not a folder of lmms-eval task yaml files")
        with warnings.catch_warnings():
            local = lmms_eval.tasks.TaskManager(include_path=str(include_path), include_defaults=False).task_index
    if all(n in local for n in names):
        return local
    return {**_defaults(), **local}


def _manager(index: dict):
    """A TaskManager over `index` (TaskManager has no public way to merge two indexes)."""
    from lmms_eval.tasks import TaskManager

    class Indexed(TaskManager):
        def initialize_tasks(self, include_path=None, include_defaults=True):
            return index

    return Indexed(include_defaults=False)


def _config(entry: dict) -> dict:
    """A task's merged yaml (includes resolved, `!function` left unloaded, local data_files made absolute)."""
    from lmms_eval.utils import load_yaml_config

    return load_yaml_config(yaml_path=entry["yaml_path"], mode="simple")


def _leaves(name: str, index: dict, seen: set | None = None) -> Iterator[tuple[str, dict]]:
    """(task, config) of every task under a task, tag or group name."""
    seen = set() if seen is None else seen
    if name in seen or name not in index:
        return
    seen.add(name)
    entry = index[name]
    if entry["type"] == "tag":
        subtasks = entry["task"]
    elif entry["type"] == "group":
        subtasks = _config(entry).get("task", [])
    else:
        yield name, _config(entry)
        return
    for sub in subtasks:
        if isinstance(sub, str):
            yield from _leaves(sub, index, seen)
        elif isinstance(sub, dict) and "task" in sub:
            base = _config(index[sub["task"]]) if sub["task"] in index else {}
            yield sub["task"], {**base, **sub}


def _data_files(cfg: dict) -> list[str]:
    files = (cfg.get("dataset_kwargs") or {}).get("data_files") or []
    out: list = []
    stack = [files]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, str):
            out.append(item)
    return sorted(out)


def _is_local(cfg: dict) -> bool:
    path = cfg.get("dataset_path")
    return path in LOCAL_BUILDERS or (isinstance(path, str) and os.path.exists(path))


def _offline() -> bool:
    """Offline by the hub's own switches, or no TCP connection to the hub (or the proxy) within 2 s."""
    if any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    url = urlsplit(os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or "https://huggingface.co")
    if not os.environ.get("HTTPS_PROXY") and not os.environ.get("https_proxy"):
        url = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=2).close()
        return False
    except OSError:
        return True


def _hub_cached(repo: str) -> bool:
    from huggingface_hub import constants

    return (Path(constants.HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}").is_dir()


def check_tasks(names: list[str], include_path: str | None) -> None:
    """Fail fast, in one line, on what lmms-eval would otherwise report late or retry for a minute: a missing
    install, an unknown name, a missing local data file, a hub data set while offline (Task.download retries under
    tenacity: 5 tries, ~8 s with HF_HUB_OFFLINE=1, ~74 s of connection retries without it, then a RetryError)."""
    names = [_bare(n) for n in names]
    index = _index(names, include_path)
    offline = None
    for name in names:
        if name not in index:
            close = difflib.get_close_matches(name, list(index), n=5, cutoff=0.6)
            hint = f"close matches: {', '.join(PREFIX + c for c in close)}" if close else "no close match"
            raise UserError(f"{PREFIX}{name}: unknown lmms-eval task; {hint}")
        for task, cfg in _leaves(name, index):
            kind = cfg.get("output_type", "generate_until")
            if kind not in SUPPORTED_OUTPUTS:
                raise UserError(f"{PREFIX}{task}: output_type {kind} is not supported; supported: {SUPPORTED_OUTPUTS}")
            if _is_local(cfg):
                for pattern in _data_files(cfg):
                    if "://" not in pattern and not glob.glob(pattern):
                        raise UserError(f"{PREFIX}{task}: data file {pattern} not found")
                continue
            offline = _offline() if offline is None else offline
            repo = str(cfg.get("dataset_path"))
            if offline and not (os.environ.get("HF_HUB_OFFLINE") and _hub_cached(repo)):
                cached = " or set HF_HUB_OFFLINE=1 to use its cached copy" if _hub_cached(repo) else ""
                raise UserError(
                    f"{PREFIX}{task}: its data set {repo} is on the Hugging Face Hub and this machine is offline; put a "
                    f"local copy (dataset_path: parquet, dataset_kwargs.data_files) in a task folder and point the "
                    f"recipe key eval.lmms_include_path at it{cached}"
                )


def _file_digest(h, path: Path) -> None:
    h.update(str(path).encode() + b"\0")
    h.update(path.read_bytes() if path.is_file() else b"<missing>")


def task_fingerprint(name: str, include_path: str | None) -> str:
    """Hash of the lmms-eval version, the task's yaml files (with includes and the Python files beside them, where
    its `!function`s live) and its data (local files by path, size and mtime; hub sets by their yaml's name and
    revision): a zero-shot baseline is reused only for the same task content."""
    from importlib.metadata import version

    name = _bare(name)
    index = _index([name], include_path)
    if name not in index:
        check_tasks([name], include_path)
    h = hashlib.sha256(f"lmms-eval {version('lmms-eval')}\0".encode())
    yamls = {index[t]["yaml_path"] for t, _ in _leaves(name, index)}
    if index[name]["yaml_path"] != -1:
        yamls.add(index[name]["yaml_path"])
    files: set[Path] = set()
    for y in yamls:
        files |= _yaml_files(Path(y))
    for path in sorted(files):
        _file_digest(h, path)
    for task, cfg in sorted(_leaves(name, index), key=lambda tc: tc[0]):
        h.update(f"{task}\0{json.dumps(cfg, sort_keys=True, default=str)}\0".encode())
        if _is_local(cfg):
            for pattern in _data_files(cfg):
                for f in sorted(glob.glob(pattern)) or [pattern]:
                    st = os.stat(f) if os.path.exists(f) else None
                    h.update(f"{os.path.abspath(f)}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}\0".encode())
    return h.hexdigest()[:12]


def _yaml_files(path: Path) -> set[Path]:
    """A yaml, the yamls it includes (recursively) and the .py files beside each."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    out = {path, *path.parent.glob("*.py")}
    raw = yaml.load(path.read_text(), Loader=Loader) or {}
    includes = raw.get("include", []) if isinstance(raw, dict) else []
    for inc in [includes] if isinstance(includes, str) else includes:
        inc_path = Path(inc) if os.path.isfile(inc) else path.parent / inc
        if inc_path.is_file() and inc_path not in out:
            out |= _yaml_files(inc_path)
    return out


def _version(task) -> str:
    """The task's metadata version (a dict, or lmms-eval's usual list of dicts), 1 when it declares none."""
    meta = task.config.metadata
    items = [meta] if isinstance(meta, dict) else meta if isinstance(meta, list) else []
    for item in items:
        if isinstance(item, dict) and "version" in item:
            return str(item["version"])
    return "1"


def _score(value, score_key: str) -> float | None:
    """One item's score from a process_results value: a number, or a dict with `score_key` (lmms-eval's convention,
    evaluator_utils.py TaskOutput.calculate_clt_aggregate_metric)."""
    if isinstance(value, dict):
        value = value.get(score_key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


def _sample(ids: list[str], name: str, limit: int | None, seed: int) -> list[int]:
    """Doc indexes to score: all, or the `limit` docs ranked first by a hash of (seed, task, the doc's id), in doc
    order. lmms-eval 0.7.3 has no way to pass doc ids (simple_evaluate/evaluate take `limit` = the first N only)."""
    if limit is None or limit >= len(ids):
        return list(range(len(ids)))
    return sorted(sorted(range(len(ids)), key=lambda i: hashlib.sha256(f"{seed}\0{name}\0{ids[i]}".encode()).digest())[:limit])


def _ids(docs) -> list[str]:
    """Each doc's own id (the first of ID_FIELDS whose values are unique), else its index."""
    for field in ID_FIELDS:
        if field in docs.column_names:
            values = [str(v) for v in docs[field]]
            if len(set(values)) == len(values):
                return values
    return [str(i) for i in range(len(docs))]


def _subset(task, keep: list[int]) -> None:
    """Restrict a loaded task to `keep` (its eval split, with and without media) before requests are built."""
    split = task.config.test_split if task.has_test_docs() else task.config.validation_split
    same = task.dataset_no_image is task.dataset  # process_results_use_image: one object (api/task.py download)
    task.dataset[split] = task.dataset[split].select(keep)
    if not same:
        task.dataset_no_image[split] = task.dataset_no_image[split].select(keep)


_ADAPTER = None


def _adapter_class():
    """The lmms subclass, built on first use so that importing this module never imports lmms-eval."""
    global _ADAPTER
    if _ADAPTER is not None:
        return _ADAPTER
    from lmms_eval.api.model import lmms

    class InMemory(lmms):
        """Requests of lmms-eval answered by a loaded HF model through the suite's prompt path."""

        accelerator = None  # evaluator.evaluate builds an Accelerator (a process-wide state) only when this is absent

        def __init__(self, model, processor, batch_size: int, max_new_tokens: int | None) -> None:
            super().__init__()
            self.model, self.processor, self.batch_size = model, processor, batch_size
            self.cap, self.advance = max_new_tokens, lambda n: None

        def clean(self) -> None:
            """lmms.clean (api/model.py) deletes every nn.Module attribute after inference; the model is the
            caller's and stays."""

        def _example(self, args: tuple) -> dict:
            ctx, _, doc_to_visual, doc_id, task, split = args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
            visuals = [v for v in (visuals or []) if v is not None]
            if len(visuals) > 1 or any(not hasattr(v, "convert") for v in visuals):
                raise UserError(f"{PREFIX}{task}: doc {doc_id} has {len(visuals)} visuals; the suite takes one image")
            return {"prompt": ctx, "image": visuals[0] if visuals else None}

        def generate_until(self, requests) -> list[str]:
            from mllmtune.evaluation.runner import generate

            out = [""] * len(requests)
            groups: dict[str, list[int]] = {}  # one greedy budget and stop list per group (a task's gen kwargs)
            for i, req in enumerate(requests):
                kwargs = req.args[1] or {}
                until = kwargs.get("until") or []
                until = [u for u in ([until] if isinstance(until, str) else until) if u]
                tokens = int(kwargs.get("max_new_tokens") or DEFAULT_NEW_TOKENS)
                groups.setdefault(json.dumps([until, min(tokens, self.cap or tokens)]), []).append(i)
            for key, idxs in groups.items():
                until, tokens = json.loads(key)
                stop = {"stop_strings": until, "tokenizer": self.processor.tokenizer} if until else {}
                for start in range(0, len(idxs), self.batch_size):  # one batch of decoded images at a time
                    chunk = idxs[start : start + self.batch_size]
                    examples = [self._example(requests[i].args) for i in chunk]
                    texts = generate(self.model, self.processor, examples, self.batch_size, tokens, **stop)
                    for i, text in zip(chunk, texts, strict=True):
                        for term in until:  # as lmms-eval's own models do (models/simple/llava_hf.py)
                            text = text.split(term)[0]
                        out[i] = text
                    self.advance(len(chunk))
            return out

        def loglikelihood(self, requests) -> list[tuple[float, bool]]:
            """(negative log-likelihood of the continuation, is it the greedy continuation). A loss, not a log-prob:
            api/task.py process_results picks multiple-choice answers by np.argmin. Summed over the answer's tokens
            (the answer turn of the chat template, as the suite trains), so `acc` ranks whole answers and
            `acc_norm` divides by their length, as in lm-eval."""
            import torch

            from mllmtune.data import ChatCollator

            collate, res = ChatCollator(self.processor), []
            for start in range(0, len(requests), self.batch_size):
                examples = []
                for req in requests[start : start + self.batch_size]:
                    args = req.args
                    if len(args) == 2:  # acc_mutual_info's unconditional request: (context, continuation) only
                        examples.append({"prompt": args[0], "image": None, "answer": args[1].lstrip()})
                        continue
                    target, doc = args[1], self.task_dict[args[4]][args[5]][args[3]]
                    cont = target if isinstance(target, str) else str(target(doc))  # llava_hf.py loglikelihood
                    examples.append({**self._example(args), "answer": cont.lstrip()})  # the turn is the delimiter
                batch = {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in collate(examples).items()}
                with torch.no_grad():
                    logits = self.model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()[:, :-1]
                labels = batch["labels"][:, 1:]
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
                greedy = ((logits.argmax(-1) == labels) | (labels == -100)).all(dim=1)
                res += [(float(a), bool(g)) for a, g in zip(nll.sum(dim=1).tolist(), greedy.tolist(), strict=True)]
                self.advance(len(examples))
            return res

        def generate_until_multi_round(self, requests):
            raise UserError(f"{PREFIX}: multi-round tasks are not supported")

    _ADAPTER = InMemory
    return InMemory


@contextmanager
def _contained(seed: int, lmms_eval) -> Iterator[str]:
    """One lmms-eval run, single-process, seeded, quiet, writing only to a temporary folder; everything it changes
    process-wide is put back."""
    import numpy as np
    from tqdm import tqdm

    env = {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    states = random.getstate(), np.random.get_state()
    modules = (lmms_eval.evaluator, lmms_eval.api.task)
    bars = [m.tqdm for m in modules]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    random.seed(seed)  # task code may shuffle (simple_evaluate seeds these too)
    np.random.seed(seed)
    for m in modules:
        m.tqdm = partial(tqdm, disable=True)
    try:
        with warnings.catch_warnings(), __import__("tempfile").TemporaryDirectory(prefix="mllmtune-lmms-") as tmp:
            yield tmp
    finally:
        for m, bar in zip(modules, bars, strict=True):
            m.tqdm = bar
        random.setstate(states[0])
        np.random.set_state(states[1])
        for k, v in env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def evaluate_tasks(
    model,
    processor,
    names: list[str],
    *,
    limit: int | None,
    batch_size: int,
    include_path: str | None,
    max_new_tokens: int | None = None,
    seed: int = 0,
    progress=None,
) -> tuple[dict[str, dict[str, float]], dict[str, list[dict]]]:
    """Scores and per-item rows of the in-memory model on lmms-eval tasks, keyed `lmms:<task>@<version>` (group
    and tag names expand to their tasks). `accuracy` is 100 x the mean per-item score of the task's first metric
    with per-item scores in [0, 1]; the task's own aggregates sit beside it, on lmms-eval's scale."""
    names = [_bare(n) for n in names]
    check_tasks(names, include_path)
    lmms_eval = _load()
    index = _index(names, include_path)
    lm = _adapter_class()(model, processor, batch_size, max_new_tokens)
    with _contained(seed, lmms_eval) as tmp:
        task_dict = lmms_eval.tasks.get_task_dict(names, _manager(index), "simple")
        kept: dict[str, tuple] = {}
        for out in lmms_eval.evaluator_utils.get_task_list(task_dict):
            task = out.task[1] if isinstance(out.task, tuple) else out.task
            if task is None:
                continue
            ids = _ids(task.eval_docs_no_media)
            keep = _sample(ids, out.task_name, limit, seed)
            _subset(task, keep)
            if task.get_config("num_fewshot") is None:  # what simple_evaluate's _adjust_config does
                task.set_config(key="num_fewshot", value=0)
            task.set_fewshot_seed(seed=seed)
            lm.task_dict[out.task_name] = task.dataset
            kept[out.task_name] = (task, [ids[i] for i in keep], keep)
        if progress:
            total = sum(len(t.eval_docs) * _requests_per_doc(t) for t, _, _ in kept.values())
            bar = progress.add_task(f"eval {', '.join(PREFIX + n for n in names)}", total=total)
            lm.advance = partial(progress.advance, bar)
        results = lmms_eval.evaluator.evaluate(
            lm=lm,
            task_dict=task_dict,
            bootstrap_iters=0,
            log_samples=True,
            verbosity="WARNING",
            # output_path: where submission-style aggregations write (file_utils.generate_submission_file; cwd when
            # None); process_with_media=False: scoring reads docs without images, as lmms-eval's CLI does.
            cli_args=SimpleNamespace(output_path=tmp, process_with_media=False, reasoning_tags=None),
            process_docs_parallel=1,
        )
    if progress:
        progress.remove_task(bar)  # noqa: F821 (bound above when progress is given)
    scores, predictions = {}, {}
    for name, (task, ids, keep) in kept.items():
        key = f"{PREFIX}{name}@{_version(task)}"
        scores[key], predictions[key] = _collect(task, name, ids, keep, results)
    return scores, predictions


def _requests_per_doc(task) -> int:
    return len(task.doc_to_choice(task.eval_docs[0])) if task.OUTPUT_TYPE == "multiple_choice" else 1


def _collect(task, name: str, ids: list[str], keep: list[int], results: dict) -> tuple[dict[str, float], list[dict]]:
    """A task's scores and per-item rows from evaluate's logged samples (one run per filter, the first is the
    task's main filter: evaluator.py logs samples filter by filter, each in doc order)."""
    import numbers

    samples = results["samples"][name][: len(keep)]
    score_key = (results["configs"].get(name) or {}).get("score_key", "score")
    per_item = {m: [_score(s.get(m), score_key) for s in samples] for m in task.aggregation()}
    main = next((m for m, v in per_item.items() if v and all(x is not None and 0 <= x <= 1 for x in v)), None)
    if main is None:
        raise UserError(f"{PREFIX}{name}: no metric with a per-item score in [0, 1] (metrics: {list(per_item)})")
    rows = []
    for s, correct in zip(samples, per_item[main], strict=True):
        target = s["target"]
        if task.OUTPUT_TYPE == "multiple_choice":
            choices = task.doc_to_choice(s["doc"])
            lls = [r[0] for r in s["filtered_resps"]][: len(choices)]
            output = pred = choices[min(range(len(lls)), key=lls.__getitem__)]
            target = choices[target] if isinstance(target, int) and 0 <= target < len(choices) else target
        else:
            output = str(s["resps"][0][0] if isinstance(s["resps"][0], list) else s["resps"][0])
            pred = s["filtered_resps"][0]
            pred = pred.strip() if isinstance(pred, str) else None
        answer = "; ".join(map(str, target)) if isinstance(target, list) else str(target)
        rows.append(
            {"id": ids[s["doc_id"]], "index": keep[s["doc_id"]], "answer": answer, "output": output, "pred": pred,
             "correct": correct}
        )
    metrics = {"accuracy": 100 * sum(r["correct"] for r in rows) / len(rows) if rows else float("nan"),
               "n": float(len(rows))}
    for k, v in results["results"][name].items():
        metric, _, filt = k.partition(",")
        if filt and "_stderr" not in metric and isinstance(v, numbers.Real) and not isinstance(v, bool):
            label = metric if filt == "none" else f"{metric}/{filt}"
            metrics[f"{label}_task" if label in ("accuracy", "n") else label] = float(v)
    return metrics, rows
