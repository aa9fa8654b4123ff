"""Standard retention benchmarks scored by lmms-eval (0.7.3) on the model in memory.

lmms-eval owns the tasks: data, prompts, filters, per-item scoring and aggregation. The suite owns the model: its
requests go through the suite's own chat-template path (`mllmtune.data.chat`), greedily, on the model object already
loaded, so a tuned model is scored with no reload and no second copy. This module is that side: the model adapter,
the seeded doc sample, one contained lmms-eval run and the scores and rows read back from it. Importing lmms-eval
and finding and checking tasks live in `mllmtune.evaluation.lmms_lookup` (`PREFIX`, `check_tasks` and
`task_fingerprint` are re-exported here).

We call `lmms_eval.evaluator.evaluate`, not `simple_evaluate`: the latter barriers on an initialized process group
(only our main process scores) and patches filelock's metaclass for the whole process (`_enable_reentrant_filelocks`:
it imports `filelock._api`, gone in filelock 4, and once shimmed makes every `FileLock(path)` return the first lock
made for that path, whatever its timeout).
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import random
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from types import SimpleNamespace

from mllmtune.errors import UserError
from mllmtune.evaluation.lmms_lookup import PREFIX, bare, check_tasks, index, load, manager, task_fingerprint

__all__ = ["PREFIX", "check_tasks", "evaluate_tasks", "task_fingerprint"]

ID_FIELDS = ("question_id", "id", "qid", "sample_id")  # a doc's own id, in order of preference
DEFAULT_NEW_TOKENS = 1024  # lmms_eval/models/simple/llava_hf.py: the budget when a task sets none
_state: dict = {}  # the lmms subclass


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
            from mllmtune.evaluation.generate import generate

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

            from mllmtune.data.chat import ChatCollator

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
    names = [bare(n) for n in names]
    check_tasks(names, include_path)
    lmms_eval = load()
    lm = _adapter()(model, processor, batch_size, max_new_tokens)
    bar, kept = None, {}
    with _contained(seed, lmms_eval) as tmp:
        task_dict = lmms_eval.tasks.get_task_dict(names, manager(index(names, include_path)), "simple")
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
    # The task's first metric, chosen by its config and never by this run's values, so the base and every tuned
    # model are scored on the same one. It must give every item a score in [0, 1] to be paired item by item.
    main = next(iter(per_item), None)
    if main is None or not all(x is not None and 0 <= x <= 1 for x in per_item[main]):
        raise UserError(
            f"{PREFIX}{name}: its first metric ({main}) gives no per-item score in [0, 1] for every item (a task "
            "scored per image pair or per category, like MME, cannot be paired item by item)"
        )
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
