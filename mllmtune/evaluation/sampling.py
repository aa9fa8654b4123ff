"""Stable item ids and the seeded, stratified sample behind `eval.limit`.

A limited evaluation must score the same items for the base and every tuned model, in every run, and must not be
the first N rows of a file sorted by label (the first five of Emotion6's folders are five "anger" images). So each
item is ranked by a hash of (seed, its id), and the sample takes the best-ranked items of each stratum (label, task
or answer) in proportion to the stratum's size. Items keep their original order in the output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

Row = TypeVar("Row")
SAMPLE_SEED = 0


def digest(*parts: bytes | str, size: int = 16) -> str:
    """A short hex digest of the parts, each length-prefixed so ('ab', 'c') and ('a', 'bc') differ."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:size]


def unique_ids(ids: Sequence[str]) -> list[str]:
    """The ids with repeats told apart (`x`, `x~2`, `x~3`, in order), so every item can be paired by id."""
    seen: dict[str, int] = {}
    out = []
    for item in ids:
        seen[item] = seen.get(item, 0) + 1
        out.append(item if seen[item] == 1 else f"{item}~{seen[item]}")
    return out


def _rank(seed: int, item_id: str) -> str:
    return digest(str(seed), item_id)


def stratified_sample(
    rows: Sequence[Row],
    limit: int | None,
    ids: Sequence[str],
    stratum: Callable[[Row], Hashable] | None = None,
    seed: int = SAMPLE_SEED,
) -> list[Row]:
    """`limit` rows drawn by id hash within strata of proportional size (largest remainder), in their input order.

    >>> rows = ["anger1", "anger2", "fear1", "fear2", "joy1", "joy2"]
    >>> sorted(r[:-1] for r in stratified_sample(rows, 3, rows, stratum=lambda r: r[:-1]))
    ['anger', 'fear', 'joy']
    """
    if limit is None or limit >= len(rows):
        return list(rows)
    strata: dict[Hashable, list[int]] = {}
    for i, row in enumerate(rows):
        strata.setdefault(stratum(row) if stratum else None, []).append(i)
    total = len(rows)
    quota = {s: limit * len(members) // total for s, members in strata.items()}
    # Largest remainder first; ties (and strata too small for a whole item) are broken by a seeded hash.
    order = sorted(strata, key=lambda s: (-(limit * len(strata[s]) % total), _rank(seed, repr(s))))
    for s in order[: limit - sum(quota.values())]:
        quota[s] += 1
    chosen: set[int] = set()
    for s, members in strata.items():
        ranked = sorted(members, key=lambda i: _rank(seed, ids[i]))
        chosen.update(ranked[: quota[s]])
    return [row for i, row in enumerate(rows) if i in chosen]
