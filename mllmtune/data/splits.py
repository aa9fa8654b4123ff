"""Which rows of a source are the split a recipe asks for: named explicitly, or held out on purpose, never guessed.

A local source gives its splits by (in this order) a split list file, a sub-folder `PATH/SPLIT/`, files named for
the split (`train.parquet`, `emoset_test.parquet`, `test-00000-of-00001.parquet`), or a split column; a single file
given as `path` is taken whole. A source that ships no split gets a deterministic held-out split from the recipe
(`holdout: {fraction, seed, stratify}`). Anything else stops with one line: a folder read whole for both training
and testing silently scores a model on its own training rows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field

from mllmtune.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class HoldOut(BaseModel):
    """A deterministic held-out split: `split: test` takes `fraction` of the rows, `split: train` the rest."""

    model_config = ConfigDict(extra="forbid")
    fraction: float = Field(0.2, gt=0, lt=1, description="share of the rows held out as the test split")
    seed: int = Field(0, ge=0, description="which rows: the same seed always holds out the same rows")
    stratify: bool = Field(True, description="hold out the same share of every label (emotion data)")


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]


def files_of_split(files: list[Path], split: str) -> list[Path]:
    """The files whose name carries the split as a word: 'emoset_train.parquet', 'train-00000-of-00002.parquet'.

    >>> [p.name for p in files_of_split([Path("emoset_train.parquet"), Path("emoset_test.parquet")], "test")]
    ['emoset_test.parquet']
    """
    want = _tokens(split)
    return [f for f in files if want and _contains(_tokens(f.stem), want)]


def _contains(tokens: list[str], want: list[str]) -> bool:
    return any(tokens[i : i + len(want)] == want for i in range(len(tokens) - len(want) + 1))


def no_split(key: str, path: Path, split: str, why: str) -> UserError:
    return UserError(
        f"{key}.split {split!r}: {path} has {why}; name the split's files or sub-folder, give {key}.split_list, "
        f"or set {key}.holdout (e.g. {{fraction: 0.2, seed: 0}}) for a source that ships no split"
    )


def filter_by_column(rows: list[dict], column: str, split: str, key: str, path: Path) -> list[dict]:
    values = {str(r.get(column)) for r in rows}
    if split not in values:
        raise UserError(
            f"{key}.split {split!r}: not a value of {path}'s {column!r} column (values: {', '.join(sorted(values))})"
        )
    return [r for r in rows if str(r.get(column)) == split]


def json_lines(text: str, where: str) -> list:
    """The objects of a JSON-lines text; a broken line is one line naming `where` and the line number."""
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"{where} line {n}: not valid JSON ({exc.msg})") from None
    return out


def _entry_path(entry) -> str | None:
    """The image path of one split-list entry: a path, a list holding one (EmoSet: [label, image, annotation]), or a
    mapping with an `image`/`path`/`file`/`id` field."""
    if isinstance(entry, str):
        return entry.strip() or None
    if isinstance(entry, (int, float)):
        return str(entry)
    if isinstance(entry, dict):
        for name in ("image", "image_path", "path", "file", "file_name", "id"):
            if entry.get(name) is not None:
                return str(entry[name])
        return None
    if isinstance(entry, (list, tuple)):
        texts = [str(x) for x in entry if isinstance(x, str)]
        images = [t for t in texts if PurePosixPath(t).suffix.lower() in IMAGE_SUFFIXES]
        return (images or texts or [None])[0]
    return None


def read_split_list(file: Path, key: str) -> list[str]:
    """Entries of a split list: a JSON list, JSON lines, or text with one entry (first field) per line."""
    if not file.is_file():
        raise UserError(f"{key}.split_list: {file} does not exist")
    text = file.read_text(encoding="utf-8-sig")
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{key}.split_list: {file} line {exc.lineno}: not valid JSON ({exc.msg})") from None
        entries = data if isinstance(data, list) else list(data.values()) if isinstance(data, dict) else []
    elif file.suffix.lower() == ".jsonl":
        entries = json_lines(text, f"{key}.split_list: {file}")
    else:
        entries = [line.split()[0] for line in text.splitlines() if line.strip()]
    paths = [_entry_path(e) for e in entries]
    if not paths or any(p is None for p in paths):
        raise UserError(
            f"{key}.split_list: {file} holds no image paths or ids (a list of paths, or of entries with one)"
        )
    return [str(PurePosixPath(p.replace("\\", "/"))) for p in paths]


def _tails(path: str) -> list[str]:
    parts = PurePosixPath(path).parts
    return ["/".join(parts[i:]) for i in range(len(parts))]


def keep_listed(rows: list[dict], listed: list[str], file: Path, key: str) -> list[dict]:
    """The rows a split list names, matched by image path (the list's path, or its tail under the data's folder, so
    EmoSet's `image/amusement/x.jpg` finds `amusement/x.jpg` under `path: EmoSet/image`) or by id."""
    index: dict[str, int] = {}
    for i, row in enumerate(rows):
        for name in (row.get("_relpath"), row.get("_source_id")):
            if name:
                index.setdefault(str(name), i)
    keep, missing = set(), []
    for entry in listed:
        hit = next((index[t] for t in _tails(entry) if t in index), None)
        if hit is None:
            missing.append(entry)
        else:
            keep.add(hit)
    if missing:
        raise UserError(
            f"{key}.split_list: {file} names {len(missing)} item(s) not in the data (first: {missing[0]}); "
            f"fix {key}.path or the list"
        )
    return [r for i, r in enumerate(rows) if i in keep]


def hold_out(
    rows: list, ids: list[str], spec: HoldOut, split: str, labels: list | None, key: str, images: list | None = None
) -> list:
    """`split: test`: a seeded `fraction` of the rows, stratified by label; `split: train`: the others.

    Rows that show the same image (same bytes) are held out together, so copies of an image, or several questions
    about one image, never land on both sides.
    """
    from mllmtune.evaluation.sampling import stratified_sample

    if split not in ("train", "test"):
        raise UserError(f"{key}.split {split!r}: with {key}.holdout the split is 'train' or 'test'")
    groups: dict[str, list[int]] = {}
    for i, item_id in enumerate(ids):
        groups.setdefault((images[i] if images and images[i] else None) or f"id:{item_id}", []).append(i)
    units = list(groups.values())
    n_test = max(1, round(spec.fraction * len(units)))
    stratum = (lambda u: labels[u[0]]) if spec.stratify and labels is not None else None
    unit_ids = [ids[u[0]] for u in units]
    test = {i for u in stratified_sample(units, n_test, unit_ids, stratum, seed=spec.seed) for i in u}
    return [row for i, row in enumerate(rows) if (i in test) == (split == "test")]


def overlap(train: list[dict], test: list[dict]) -> int:
    """How many training rows show an image that a test row shows (same content hash, or same file)."""
    keys = {k for ex in test for k in (ex.get("image_sha"), ex.get("image_file")) if k}
    return sum(1 for ex in train if any(k in keys for k in (ex.get("image_sha"), ex.get("image_file")) if k))
