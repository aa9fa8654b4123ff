"""EMO-R3's rewards as the released code scores them, as plain functions in TRL's reward signature:
`f(completions, **columns) -> list[float]`, registered by name in `mllmtune.rewards`.

Source: SeerRay-Lab/emo-r3 `examples/reward_function/emor3.py` (the scores) and `verl/trainer/ray_trainer.py`
(`_rethink_batch`: what the policy is asked). `accuracy` and `format` read only the completion and the example's
columns (`label`, `labels`, `template`). The two reflective terms ask the *current policy* about its own reasoning,
without gradient, in one batched generation per reward and step (`policy_asker`):

- coherence: `<step1>`…`</step2>` (tags included) and "Which emotion best describes the text above?": a reply equal
  to the label (lowercased) 1, an empty or "none" reply 0.5, else 0;
- consistency: the image, "Can the following text describe the image?" and `<step1>` up to `<step2>`: "yes" anywhere
  in the reply 1, else "no" anywhere 0, else 0.5.

A completion without the span to re-read is still asked, with "Answer 'None'" (after the image, for consistency), and
its reply scored by the same rule, as released. The stage weighs the terms by the recipe's `stage.rewards` (presets
in `mllmtune.rewards`).
"""

from __future__ import annotations

from collections.abc import Callable

from mllmtune.emo_r3 import template as tpl
from mllmtune.rewards import register

# ask(queries) -> replies; a query is {"prompt": str, "image": PIL image or None}.
Asker = Callable[[list[dict]], list[str]]


def _text(completion) -> str:
    """A completion as text, whether TRL passes a string or a conversational message list."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if m["role"] == "assistant" and isinstance(m["content"], str))


@register("accuracy")
def accuracy_reward(completions, label, labels=None, template=None, **kwargs) -> list[float]:
    """1.0 when the last `\\boxed{}` holds the label (lowercased, exact), else 0.0; the plain template's named label.

    >>> accuracy_reward(["<step1> x </step1> \\\\boxed{Fear}.", "\\\\boxed{\\\\text{fear}}", "fear"],
    ...                 label=["fear"] * 3, template=["emo-r3"] * 3)
    [1.0, 0.0, 0.0]
    """
    n = len(completions)
    templates, candidates = template or ["emo-r3"] * n, labels or [[lab] for lab in label]
    return [
        float(tpl.predicted_label(_text(c), t, labs) == lab)
        for c, lab, labs, t in zip(completions, label, candidates, templates, strict=True)
    ]


@register("format")
def format_reward(completions, template=None, **kwargs) -> list[float]:
    """1.0 when the reply passes the template's released format check, else 0.0.

    >>> format_reward(["<step1> a </step1> <step2> b </step2> <step3> c </step3> \\\\boxed{fear}", "\\\\boxed{fear}"],
    ...               template=["emo-r3", "emo-r3"])
    [1.0, 0.0]
    """
    templates = template or ["emo-r3"] * len(completions)
    return [float(tpl.has_format(_text(c), t)) for c, t in zip(completions, templates, strict=True)]


def score_coherence(reply: str, label: str) -> float:
    """The released `rethink_reward`.

    >>> [score_coherence(r, "fear") for r in ("Fear", "Fear.", "", "None", "joy")]
    [1.0, 0.0, 0.5, 0.5, 0.0]
    """
    if not reply or reply.lower() == "none":
        return 0.5
    return 1.0 if reply.lower() == label.lower() else 0.0


def score_consistency(reply: str) -> float:
    """The released `rethink_reward_image`: substrings, "yes" first.

    >>> [score_consistency(r) for r in ("Yes.", "No, yes", "It does not", "maybe")]
    [1.0, 1.0, 0.0, 0.5]
    """
    if "yes" in reply.lower():
        return 1.0
    if "no" in reply.lower():
        return 0.0
    return 0.5


def _reflect(ask: Asker, queries: list[dict], score: Callable[[int, str], float]) -> list[float]:
    """Ask every query in one batch and score each reply."""
    replies = ask(queries) if queries else []
    return [score(i, reply) for i, reply in enumerate(replies)]


@register("coherence", reflective=True)
def make_coherence_reward(ask: Asker) -> Callable[..., list[float]]:
    """Coherence of the reasoning with the true label, judged by the policy from the text alone.

    >>> reward = make_coherence_reward(lambda queries: ["fear"] * len(queries))
    >>> reward(["<step1> spikes </step1> <step2> scared </step2> <step3> negative </step3> \\\\boxed{fear}",
    ...         "\\\\boxed{joy}"], label=["joy", "fear"], labels=[["fear", "joy"]] * 2)
    [0.0, 1.0]
    """

    def coherence_reward(completions, label, labels, **kwargs) -> list[float]:
        queries = []
        for c, labs in zip(completions, labels, strict=True):
            span = tpl.coherence_span(_text(c))
            prompt = tpl.coherence_question(span, labs) if span else tpl.NONE_QUESTION
            queries.append({"prompt": prompt, "image": None})
        return _reflect(ask, queries, lambda i, reply: score_coherence(reply, label[i]))

    return coherence_reward


@register("consistency", reflective=True)
def make_consistency_reward(ask: Asker) -> Callable[..., list[float]]:
    """Consistency of step 1 (the named triggers) with the image, judged by the policy looking at the image.

    >>> reward = make_consistency_reward(lambda queries: ["yes" if "sun" in q["prompt"] else "nah" for q in queries])
    >>> reward(["<step1> a sun </step1><step2>", "<step1> rain </step1><step2>", "\\\\boxed{joy}"], image=[None] * 3)
    [1.0, 0.5, 0.5]
    """

    def consistency_reward(completions, image=None, **kwargs) -> list[float]:
        images = list(image) if image is not None else [None] * len(completions)
        queries = []
        for c, img in zip(completions, images, strict=True):
            span = tpl.consistency_span(_text(c))
            prompt = tpl.CONSISTENCY_QUESTION.format(text=span) if span else tpl.NONE_IMAGE_QUESTION
            queries.append({"prompt": prompt, "image": img})
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
    from mllmtune.evaluation.generate import generate

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
