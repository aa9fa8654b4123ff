"""EMO-R3 rewards as plain functions in TRL's reward signature: `f(completions, **columns) -> list[float]`.

`accuracy_reward` and `format_reward` read only the completion and the example's columns (`label`, `labels`,
`template`). The two reflective terms ask the *current policy* about its own reasoning, without gradient, in one
batched generation per reward and step (`policy_asker`):

- coherence: steps 1-2 and "Which emotion best describes the text above?": 1 for the true label, 0.5 for an empty
  or "none" reply, else 0;
- consistency: the image, step 1 and "Can the following text describe the image?": 1 for yes, 0 for no, else 0.5.

A completion with no reasoning to re-read scores 0 on both (the format reward already penalizes the shape).
The stage weighs the terms: total = w_acc·accuracy + w_fmt·format + w_coh·coherence + w_cons·consistency, so the
paper's (1-λ1-λ2)·acc + λ1·(coh+cons)/2 + λ2·format is w_coh = w_cons = λ1/2.
"""

from __future__ import annotations

from collections.abc import Callable

from mllmtune.emo_r3 import template as tpl
from mllmtune.evaluation.parse import match_label, normalize, parse_yes_no

# ask(queries) -> replies; a query is {"prompt": str, "image": PIL image or None}.
Asker = Callable[[list[dict]], list[str]]


def _text(completion) -> str:
    """A completion as text, whether TRL passes a string or a conversational message list."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if m["role"] == "assistant" and isinstance(m["content"], str))


def accuracy_reward(completions, label, labels, template=None, **kwargs) -> list[float]:
    """1.0 when the reply's answer is the label, else 0.0.

    >>> accuracy_reward(["<step1> x </step1> \\\\boxed{Fear}", "\\\\boxed{anger}", "fear"],
    ...                 label=["fear"] * 3, labels=[["fear", "anger"]] * 3, template=["emo-r3"] * 3)
    [1.0, 0.0, 0.0]
    """
    n = len(completions)
    templates = template or ["emo-r3"] * n
    return [
        float(tpl.predicted_label(_text(c), t, labs) == lab)
        for c, lab, labs, t in zip(completions, label, labels, templates, strict=True)
    ]


def format_reward(completions, template=None, **kwargs) -> list[float]:
    """1.0 when the reply has the template's shape (three steps in order and `\\boxed{}` for EMO-R3), else 0.0.

    >>> format_reward(["<step1> a </step1> <step2> b </step2> <step3> c </step3> \\\\boxed{fear}", "\\\\boxed{fear}"],
    ...               template=["emo-r3", "emo-r3"])
    [1.0, 0.0]
    """
    templates = template or ["emo-r3"] * len(completions)
    return [float(tpl.has_format(_text(c), t)) for c, t in zip(completions, templates, strict=True)]


def score_coherence(reply: str, label: str, labels: list[str]) -> float:
    """
    >>> [score_coherence(r, "fear", ["fear", "joy"]) for r in ("Fear.", "", "none", "joy", "banana")]
    [1.0, 0.5, 0.5, 0.0, 0.0]
    """
    if normalize(reply) in ("", "none"):
        return 0.5
    return float(match_label(reply, labels) == label)


def score_consistency(reply: str) -> float:
    """
    >>> [score_consistency(r) for r in ("Yes.", "no", "maybe")]
    [1.0, 0.0, 0.5]
    """
    return {"yes": 1.0, "no": 0.0}.get(parse_yes_no(reply), 0.5)


def _reflect(ask: Asker, queries: list[dict | None], score: Callable[[int, str], float]) -> list[float]:
    """Ask every non-empty query in one batch; completions with nothing to re-read score 0."""
    todo = [i for i, q in enumerate(queries) if q is not None]
    replies = dict(zip(todo, ask([queries[i] for i in todo]), strict=True)) if todo else {}
    return [score(i, replies[i]) if i in replies else 0.0 for i in range(len(queries))]


def make_coherence_reward(ask: Asker) -> Callable[..., list[float]]:
    """Coherence of the reasoning with the true label, judged by the policy from the text alone.

    >>> reward = make_coherence_reward(lambda queries: ["fear"] * len(queries))
    >>> reward(["<step1> spikes </step1> <step2> scared </step2> <step3> negative </step3> \\\\boxed{fear}",
    ...         "\\\\boxed{joy}"], label=["joy", "joy"], labels=[["fear", "joy"]] * 2)
    [0.0, 0.0]
    """

    def coherence_reward(completions, label, labels, **kwargs) -> list[float]:
        texts = [tpl.reasoning(_text(c)) for c in completions]
        queries = [
            {"prompt": tpl.coherence_question(t, labs), "image": None} if t else None
            for t, labs in zip(texts, labels, strict=True)
        ]
        return _reflect(ask, queries, lambda i, reply: score_coherence(reply, label[i], labels[i]))

    return coherence_reward


def make_consistency_reward(ask: Asker) -> Callable[..., list[float]]:
    """Consistency of step 1 (the named triggers) with the image, judged by the policy looking at the image.

    >>> reward = make_consistency_reward(lambda queries: ["yes" if "sun" in q["prompt"] else "no" for q in queries])
    >>> reward(["<step1> a sun </step1>", "<step1> rain </step1>", "\\\\boxed{joy}"], image=[None] * 3)
    [1.0, 0.0, 0.0]
    """

    def consistency_reward(completions, image=None, **kwargs) -> list[float]:
        images = list(image) if image is not None else [None] * len(completions)
        texts = [_text(c) for c in completions]
        steps = [tpl.step(t, 1) or tpl.reasoning(t) for t in texts]
        queries = [
            {"prompt": tpl.CONSISTENCY_QUESTION.format(text=s), "image": img} if s else None
            for s, img in zip(steps, images, strict=True)
        ]
        return _reflect(ask, queries, lambda i, reply: score_consistency(reply))

    return consistency_reward


def policy_asker(
    open_policy, processor, temperature: float, top_p: float, max_new_tokens: int, batch_size: int
) -> Asker:
    """An `ask` that samples the live policy without gradient, in batches of `batch_size`.

    `open_policy()` is a context manager yielding the generating model (the stage unwraps distributed wrappers
    there). Text-only and image queries go in separate calls because one processor batch cannot mix them; each
    reflective reward sends only one kind, so it is one generation call per reward and step.
    """
    from mllmtune.evaluation.runner import generate

    def ask(queries: list[dict]) -> list[str]:
        replies: list[str] = [""] * len(queries)
        with open_policy() as model:
            was_training = model.training
            try:
                for has_image in (False, True):
                    idx = [i for i, q in enumerate(queries) if (q.get("image") is not None) == has_image]
                    if not idx:
                        continue
                    batch = [queries[i] for i in idx]
                    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p)
                    outs = generate(model, processor, batch, batch_size, max_new_tokens, **sampling)
                    for i, out in zip(idx, outs, strict=True):
                        replies[i] = out
            finally:
                model.train(was_training)
        return replies

    return ask
