"""Standard retention benchmarks scored by lmms-eval (0.7.3) on the model in memory.

lmms-eval owns the tasks: data, prompts, filters, per-item scoring and aggregation. The suite owns the model: its
requests go through the suite's own chat-template path (`mllmtune.data`), greedily, on the model object already
loaded, so a tuned model is scored with no reload and no second copy.

lmms-eval is imported lazily (`mllmtune --help` never loads it) and its process-wide effects are contained: its
import adds a blanket `ignore` warning filter (lmms_eval/utils.py) and sends loguru to stdout
(lmms_eval/models/__init__.py). We call `lmms_eval.evaluator.evaluate`, not `simple_evaluate`: the latter barriers
on an initialized process group (only our main process scores) and patches filelock's metaclass for the whole
process (`_enable_reentrant_filelocks`: it imports `filelock._api`, gone in filelock 4, and once shimmed makes every
`FileLock(path)` return the first lock made for that path, whatever its timeout).
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import json
import numbers
import os
import random
import socket
import sys
import tempfile
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
# lmms_eval/utils.py _LOCAL_BUILDERS (+ imagefolder): builders whose data_files are local (relative to the yaml).
LOCAL_BUILDERS = frozenset({"csv", "json", "parquet", "text", "pandas", "arrow", "imagefolder"})
ID_FIELDS = ("question_id", "id", "qid", "sample_id")  # a doc's own id, in order of preference
SUPPORTED_OUTPUTS = ("generate_until", "multiple_choice", "loglikelihood")
DEFAULT_NEW_TOKENS = 1024  # lmms_eval/models/simple/llava_hf.py: the budget when a task sets none
_state: dict = {}  # the loguru set-up done, lmms-eval's own task index, the lmms subclass


def _bare(name: str) -> str:
    return name[len(PREFIX) :] if name.startswith(PREFIX) else name


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def _load():
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

        lmms_eval = _load()
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


def _index(names: list[str], include_path: str | None) -> dict:
    """Task name -> index entry. A local task shadows a built-in one of its name (in TaskManager.initialize_tasks
    the built-ins win), so a local copy of `pope` is what `lmms:pope` runs."""
    lmms_eval = _load()
    local: dict = {}
    if include_path:
        if not Path(include_path).is_dir():
            raise UserError(f"eval.lmms_include_path: {include_path} is not a folder of lmms-eval task yaml files")
        with warnings.catch_warnings():
            local = lmms_eval.tasks.TaskManager(include_path=str(include_path), include_defaults=False).task_index
    return local if all(n in local for n in names) else {**_defaults(), **local}


def _manager(index: dict):
    """A TaskManager over `index` (it has no public way to merge two indexes)."""
    from lmms_eval.tasks import TaskManager

    class Indexed(TaskManager):
        def initialize_tasks(self, include_path=None, include_defaults=True):
            return index

    return Indexed(include_defaults=False)


def _leaves(name: str, index: dict, seen: set | None = None) -> Iterator[tuple[str, dict]]:
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
            yield from _leaves(sub, index, seen)
        elif isinstance(sub, dict) and "task" in sub:
            base = dict(next(_leaves(sub["task"], index, set()), (None, {}))[1])
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


def _known(name: str, index: dict) -> None:
    if name not in index:
        close = difflib.get_close_matches(name, list(index), n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(PREFIX + c for c in close)}" if close else "no close match"
        raise UserError(f"{PREFIX}{name}: unknown lmms-eval task; {hint}")


def check_tasks(names: list[str], include_path: str | None) -> None:
    """Fail in one line on what lmms-eval reports late or retries: a missing install, an unknown name, an output
    type we cannot answer, a missing local data file, a hub data set while offline (Task.download retries under
    tenacity, 5 tries: ~8 s with HF_HUB_OFFLINE=1, ~74 s of connection retries without it, then a RetryError)."""
    names = [_bare(n) for n in names]
    index = _index(names, include_path)
    offline = None
    for name in names:
        _known(name, index)
        for task, cfg in _leaves(name, index):
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

    name = _bare(name)
    index = _index([name], include_path)
    _known(name, index)
    h = hashlib.sha256(f"lmms-eval {version('lmms-eval')}\0".encode())
    leaves = sorted(_leaves(name, index), key=lambda tc: tc[0])
    yamls = {Path(index[t]["yaml_path"]) for t, _ in leaves if t in index} | {Path(index[name]["yaml_path"])}
    files = set().union(*(_yaml_files(y) for y in yamls if y.is_file()))
    for path in sorted(files):
        h.update(f"{path}\0".encode() + path.read_bytes())
    for _, cfg in leaves:
        for f in sorted({g for pattern in _data_files(cfg) for g in glob.glob(pattern)}) if _is_local(cfg) else []:
            st = os.stat(f)
            h.update(f"{os.path.abspath(f)}:{st.st_size}:{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:12]


def _ids(docs) -> list[str]:
    """Each doc's own id (the first of ID_FIELDS whose values are unique), else its index."""
    for field in ID_FIELDS:
        if field in getattr(docs, "column_names", []):
            values = [str(v) for v in docs[field]]
            if len(set(values)) == len(values):
                return values
    return [str(i) for i in range(len(docs))]


def _sample(ids: list[str], name: str, limit: int | None, seed: int) -> list[int]:
    """All docs, or the `limit` ranked first by a hash of (seed, task, doc id), in doc order. lmms-eval 0.7.3 takes
    no doc ids (simple_evaluate and evaluate have `limit`, the first N, and `offset`), so we subset the task."""
    if limit is None or limit >= len(ids):
        return list(range(len(ids)))
    rank = {i: hashlib.sha256(f"{seed}\0{name}\0{ids[i]}".encode()).digest() for i in range(len(ids))}
    return sorted(sorted(rank, key=rank.__getitem__)[:limit])


def _subset(task, keep: list[int]) -> None:
    """Restrict a loaded task's eval split (with and without media) to `keep` before its requests are built."""
    split = task.config.test_split if task.has_test_docs() else task.config.validation_split
    same = task.dataset_no_image is task.dataset  # one object under process_results_use_image (api/task.py)
    task.dataset[split] = task.dataset[split].select(keep)
    if not same:
        task.dataset_no_image[split] = task.dataset_no_image[split].select(keep)


def _adapter():
    """The lmms subclass, built on first use so that importing this module never imports lmms-eval."""
    if "adapter" in _state:
        return _state["adapter"]
    from lmms_eval.api.instance import GenerationResult
    from lmms_eval.api.model import lmms

    class InMemory(lmms):
        """lmms-eval's requests answered by a loaded HF model through the suite's prompt path."""

        accelerator = None  # evaluator.evaluate makes an Accelerator (process-wide state) only when this is absent

        def __init__(self, model, processor, batch_size: int, max_new_tokens: int | None) -> None:
            super().__init__()
            self.model, self.processor, self.batch_size, self.cap = model, processor, batch_size, max_new_tokens
            self.advance = lambda n: None

        def clean(self) -> None:
            """lmms.clean (api/model.py) deletes the wrapper's nn.Module attributes after inference; ours stays."""

        def _example(self, args: tuple) -> dict:
            ctx, _, doc_to_visual, doc_id, task, split = args
            visuals = [v for v in (doc_to_visual(self.task_dict[task][split][doc_id]) or []) if v is not None]
            if len(visuals) > 1 or any(not hasattr(v, "convert") for v in visuals):
                raise UserError(f"{PREFIX}{task}: doc {doc_id} has {len(visuals)} visuals; the suite takes one image")
            return {"prompt": ctx, "image": visuals[0] if visuals else None}

        def generate_until(self, requests) -> list[str]:
            from mllmtune.evaluation.runner import generate

            out, groups = [""] * len(requests), {}  # a group: one stop list and token budget (a task's gen kwargs)
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
                    texts = generate(self.model, self.processor, examples, len(chunk), tokens, **stop)
                    for i, text in zip(chunk, texts, strict=True):
                        for term in until:  # as lmms-eval's own models cut (models/simple/llava_hf.py)
                            text = text.split(term)[0]
                        out[i] = text
                    self.advance(len(chunk))
            return out

        def loglikelihood(self, requests) -> list:
            """(negative log-likelihood, is it the greedy continuation) per request: a loss, as api/task.py
            process_results picks a multiple-choice answer by np.argmin. Summed over the answer turn's tokens (the
            suite's chat template, as it trains), so `acc` ranks whole answers and `acc_norm` divides by length."""
            import torch

            from mllmtune.data import ChatCollator

            collate, res = ChatCollator(self.processor, max_length=sys.maxsize), []  # never cut an answer
            for start in range(0, len(requests), self.batch_size):
                examples = []
                for req in requests[start : start + self.batch_size]:
                    if len(args := req.args) == 2:  # acc_mutual_info's unconditional (context, continuation)
                        examples.append({"prompt": args[0], "image": None, "answer": args[1].lstrip()})
                        continue
                    target, doc_id, task, split = args[1], *args[3:]
                    if not isinstance(target, str):  # output_type loglikelihood passes doc_to_target (llava_hf.py)
                        target = str(target(self.task_dict[task][split][doc_id]))
                    examples.append({**self._example(args), "answer": target.lstrip()})  # the turn delimits it
                batch = {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in collate(examples).items()}
                with torch.no_grad():
                    logits = self.model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()[:, :-1]
                labels = batch["labels"][:, 1:]
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none").sum(1)
                greedy = ((logits.argmax(-1) == labels) | (labels == -100)).all(1)
                # evaluator.evaluate passes each response through api/instance.py unwrap_generation_output, which
                # turns a bare (float, bool) into its str() (so lmms-eval 0.7.3 breaks multiple_choice for every
                # model); a GenerationResult's `text` goes through as it is.
                res += [GenerationResult(text=(a, g)) for a, g in zip(nll.tolist(), greedy.tolist(), strict=True)]
                self.advance(len(examples))
            return res

        def generate_until_multi_round(self, requests):
            raise UserError(f"{PREFIX}: multi-round tasks are not supported")

    _state["adapter"] = InMemory
    return InMemory


@contextmanager
def _contained(seed: int, lmms_eval) -> Iterator[str]:
    """One lmms-eval run: single-process, seeded, without its progress bars, writing only into a temporary folder;
    what it changes process-wide is put back."""
    import numpy as np
    from tqdm import tqdm

    env = {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    states = random.getstate(), np.random.get_state()
    modules = lmms_eval.evaluator, lmms_eval.api.task
    bars = [m.tqdm for m in modules]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")  # evaluate reads these for its collectives
    random.seed(seed)  # task code may shuffle; simple_evaluate seeds these too
    np.random.seed(seed)
    for m in modules:  # their bars pass `disable=` themselves, so it is forced
        m.tqdm = lambda *args, **kwargs: tqdm(*args, **{**kwargs, "disable": True})
    try:
        with warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="mllmtune-lmms-") as tmp:
            yield tmp
    finally:
        for m, bar in zip(modules, bars, strict=True):
            m.tqdm = bar
        random.setstate(states[0])
        np.random.set_state(states[1])
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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
    """Scores and per-item rows on lmms-eval tasks (a group or tag name expands to its tasks), keyed
    `lmms:<task>@<version>`. `accuracy` is 100 x the mean per-item score of the task's first metric whose per-item
    scores lie in [0, 1]; the task's own aggregates sit beside it, on lmms-eval's scale. A row's `index` is the doc's
    position in the task's split, `id` its own id field where it has a unique one (ID_FIELDS), else that index."""
    names = [_bare(n) for n in names]
    check_tasks(names, include_path)
    lmms_eval = _load()
    lm = _adapter()(model, processor, batch_size, max_new_tokens)
    bar, kept = None, {}
    with _contained(seed, lmms_eval) as tmp:
        task_dict = lmms_eval.tasks.get_task_dict(names, _manager(_index(names, include_path)), "simple")
        for out in lmms_eval.evaluator_utils.get_task_list(task_dict):
            task = out.task[1] if isinstance(out.task, tuple) else out.task
            if task is None:
                continue
            ids = _ids(task.eval_docs_no_media)
            if not (keep := _sample(ids, out.task_name, limit, seed)):
                raise UserError(f"{PREFIX}{out.task_name}: no docs to score (limit {limit})")
            _subset(task, keep)
            if task.get_config("num_fewshot") is None:  # as simple_evaluate's _adjust_config
                task.set_config(key="num_fewshot", value=0)
            task.set_fewshot_seed(seed=seed)
            lm.task_dict[out.task_name] = task.dataset
            kept[out.task_name] = task, [ids[i] for i in keep], keep
        if progress:
            per_doc = {
                t: len(t.doc_to_choice(t.eval_docs[0])) if t.OUTPUT_TYPE == "multiple_choice" else 1
                for t, *_ in kept.values()
            }
            bar = progress.add_task(
                f"eval {', '.join(PREFIX + n for n in names)}",
                total=sum(len(t.eval_docs) * k for t, k in per_doc.items()),
            )
            lm.advance = partial(progress.advance, bar)
        results = lmms_eval.evaluator.evaluate(
            lm=lm,
            task_dict=task_dict,
            bootstrap_iters=0,
            log_samples=True,
            verbosity="WARNING",
            # output_path: where submission aggregations write (file_utils.generate_submission_file: the working
            # directory when None); process_with_media=False: scoring reads docs without images, as lmms-eval's CLI.
            cli_args=SimpleNamespace(output_path=tmp, process_with_media=False, reasoning_tags=None),
            process_docs_parallel=1,
        )
    if bar is not None:
        progress.remove_task(bar)
    scores, predictions = {}, {}
    for name, (task, ids, keep) in kept.items():
        key = f"{PREFIX}{name}@{_version(task)}"
        scores[key], predictions[key] = _collect(task, name, ids, keep, results)
    return scores, predictions


def _version(task) -> str:
    """The task's metadata version (a dict, or lmms-eval's usual list of dicts); 1 when it declares none."""
    meta = task.config.metadata
    for item in [meta] if isinstance(meta, dict) else meta if isinstance(meta, list) else []:
        if isinstance(item, dict) and "version" in item:
            return str(item["version"])
    return "1"


def _score(value, score_key: str) -> float | None:
    """An item's score from its process_results value: a number, or a dict's `score_key` (lmms-eval's convention,
    evaluator_utils.py TaskOutput.calculate_clt_aggregate_metric)."""
    value = value.get(score_key) if isinstance(value, dict) else value
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
    return float(value) if ok else None


def _collect(task, name: str, ids: list[str], keep: list[int], results: dict) -> tuple[dict, list[dict]]:
    """A task's scores and rows from evaluate's logged samples: they are logged filter by filter, each in doc
    order (evaluator.py), and the first filter is the task's main one."""
    samples = results["samples"][name][: len(keep)]
    score_key = (results["configs"].get(name) or {}).get("score_key", "score")
    per_item = {m: [_score(s.get(m), score_key) for s in samples] for m in task.aggregation()}
    main = next((m for m, v in per_item.items() if v and all(x is not None and 0 <= x <= 1 for x in v)), None)
    if main is None:
        raise UserError(f"{PREFIX}{name}: no metric with per-item scores in [0, 1] (metrics: {list(per_item)})")
    rows = []
    for s, correct in zip(samples, per_item[main], strict=True):
        target = s["target"]
        if task.OUTPUT_TYPE == "multiple_choice":
            choices = task.doc_to_choice(s["doc"])
            lls = [r[0] for r in s["filtered_resps"]]
            lls = lls[::2] if len(lls) == 2 * len(choices) else lls  # acc_mutual_info interleaves its requests
            output = pred = choices[lls.index(min(lls))]
            target = choices[target] if isinstance(target, int) and 0 <= target < len(choices) else target
        else:
            output = s["resps"][0][0] if isinstance(s["resps"][0], list) else s["resps"][0]
            pred = s["filtered_resps"][0].strip() if isinstance(s["filtered_resps"][0], str) else None
        answer = "; ".join(map(str, target)) if isinstance(target, list) else str(target)
        row = {"id": ids[s["doc_id"]], "index": keep[s["doc_id"]], "answer": answer, "output": str(output)}
        rows.append(row | {"pred": pred, "correct": correct})
    metrics = {"accuracy": 100 * sum(r["correct"] for r in rows) / len(rows), "n": float(len(rows))}
    for k, v in results["results"][name].items():
        metric, _, filt = k.partition(",")
        if filt and "_stderr" not in metric and isinstance(v, numbers.Real) and not isinstance(v, bool):
            label = metric if filt == "none" else f"{metric}/{filt}"
            metrics[f"{label}_task" if label in metrics else label] = float(v)
    return metrics, rows
