"""Converters for raw data-set forms the sources cannot read directly.

Only WebEmo needs one: it ships no images, only URL lists with numeric labels, so a user downloads the images
and this module writes the JSONL (`image`, `answer`) the `jsonl` source reads. Every other emotion set the suite
targets is readable as distributed (see docs/data.md): EmoSet-118K (image folders + split lists), EmoSet2k
(hub parquet), Emotion6 and FI (one image folder per label).

WebEmo as distributed (Panda et al., "Contemplating Visual Emotions: Understanding and Overcoming Dataset Bias",
ECCV 2018; release files mirrored in github.com/ccivit/download_webEmo: README.md, README.txt, category.txt):

- `train25.txt` (213,952 URLs) and `test25.txt` (53,489 URLs): one image per line, ``URL LABEL_ID`` separated
  by a space, e.g.
  ``https://as2.ftcdn.net/jpg/00/42/93/78/220_F_42937802_2rowA8aFZs20JZ2Iq6WKArKKaaj1BIv4.jpg 0``;
  the README says that ``0`` means affection, the level-3 (25-way) emotion.
- `category.txt`: ``labels=[('affection', 'love', '+'), ('cheerfullness', 'joy', '+'), ...]``, 25 tuples
  (level-3 name, level-2 name, level-1 sign). A label id is the position in that list: the README spells out only
  ``0`` = affection; the other ids follow the list order. Names keep the release's spelling ('cheerfullness',
  'irritabilty'). The README text says level 2 has six categories (anger, fear, joy, love, sadness, surprise),
  but the list also maps 'confusion' to its own level-2 name 'confusion', so level 2 has seven names here.
  Level 1: '+' is positive and '-' is negative (README).

The images are not in the release. The community download scripts (ccivit/download_webEmo download_dataset.py,
slifer0918/WEBEmo download.py) save each image under the last part of its URL, ``url.split('/')[-1]``, in a
folder per label id: ``train/<id>/<name>`` and ``test/<id>/<name>`` (ccivit) or ``images/train25/<id>/<name>``
(slifer0918). `webemo_to_jsonl` looks a name up anywhere under the image folder it is given, preferring a
match inside a folder named for the line's label id, so a flat folder works as well.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from mllmtune.errors import UserError

# category.txt of the WebEmo release, in file order: (level-3 name, level-2 name, level-1 sign).
# Source: github.com/ccivit/download_webEmo category.txt (identical copy: slifer0918/WEBEmo category.txt).
WEBEMO_CATEGORIES: list[tuple[str, str, str]] = [
    ("affection", "love", "+"),
    ("cheerfullness", "joy", "+"),
    ("confusion", "confusion", "-"),
    ("contentment", "joy", "+"),
    ("disappointment", "sadness", "-"),
    ("disgust", "anger", "-"),
    ("enthrallment", "joy", "+"),
    ("envy", "anger", "-"),
    ("exasperation", "anger", "-"),
    ("gratitude", "love", "+"),
    ("horror", "fear", "-"),
    ("irritabilty", "anger", "-"),
    ("lust", "love", "+"),
    ("neglect", "sadness", "-"),
    ("nervousness", "fear", "-"),
    ("optimism", "joy", "+"),
    ("pride", "joy", "+"),
    ("rage", "anger", "-"),
    ("relief", "joy", "+"),
    ("sadness", "sadness", "-"),
    ("shame", "sadness", "-"),
    ("suffering", "sadness", "-"),
    ("surprise", "surprise", "+"),
    ("sympathy", "sadness", "-"),
    ("zest", "joy", "+"),
]
SIGN_NAMES = {"+": "positive", "-": "negative"}
LEVELS = (25, 7, 2)


@dataclass
class ConvertReport:
    """What a conversion wrote and what it could not: nothing is dropped without being counted here."""

    list_file: Path
    out: Path
    lines: int = 0
    written: int = 0
    missing: int = 0
    missing_file: Path | None = None
    duplicates: int = 0
    duplicate_lines: list[int] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        text = f"{self.out}: {self.written} of {self.lines} rows written"
        if self.missing:
            text += f"; {self.missing} images missing or empty (listed in {self.missing_file})"
        if self.duplicates:
            text += f"; {self.duplicates} repeated images skipped (lines {_short(self.duplicate_lines)})"
        return text


def _short(numbers: list[int], n: int = 5) -> str:
    shown = ", ".join(str(x) for x in numbers[:n])
    return shown + (f", ... ({len(numbers)} in all)" if len(numbers) > n else "")


def read_webemo_categories(path: str | Path) -> list[tuple[str, str, str]]:
    """Read WebEmo's `category.txt` (``labels=[('affection', 'love', '+'), ...]``) or a plain list of 25 names.

    A plain list (one level-3 name a line, in label-id order) leaves the level-2 and level-1 names unknown; those
    tuples carry ``None`` there and only ``level=25`` can use them.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such names file")
    text = path.read_text(encoding="utf-8-sig")
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")).strip()
    if "=" in body and "[" in body:
        try:
            value = ast.literal_eval(body.split("=", 1)[1].strip())
        except (ValueError, SyntaxError) as exc:
            raise UserError(f"{path}: not a category.txt list of (name, level-2 name, sign) tuples ({exc})") from None
        if not isinstance(value, list) or not all(
            isinstance(t, tuple) and len(t) == 3 and all(isinstance(x, str) for x in t) for t in value
        ):
            raise UserError(f"{path}: expected a list of (name, level-2 name, sign) tuples")
        bad = [t for t in value if t[2] not in SIGN_NAMES]
        if bad:
            raise UserError(f"{path}: sign {bad[0][2]!r} of {bad[0][0]!r} is neither '+' nor '-'")
        return [tuple(t) for t in value]
    names = [line.strip() for line in body.splitlines() if line.strip()]
    if not names:
        raise UserError(f"{path}: no names in it")
    return [(n, None, None) for n in names]


def webemo_labels(level: int, categories: list[tuple[str, str, str]] | None = None) -> list[str]:
    """The label names of one WebEmo level: 25 in label-id order, 7 and 2 sorted (for a recipe's `labels:`)."""
    categories = categories or WEBEMO_CATEGORIES
    if level == 25:
        return [c[0] for c in categories]
    if level == 7:
        return sorted({c[1] for c in categories})
    if level == 2:
        return ["negative", "positive"]
    raise UserError(f"level {level!r}: WebEmo has levels 25, 7 and 2")


def _name(categories, label_id: int, level: int) -> str:
    fine, coarse, sign = categories[label_id]
    if level == 25:
        return fine
    if coarse is None:
        raise UserError(f"level {level} needs category.txt (name, level-2 name, sign) tuples, not a plain name list")
    return coarse if level == 7 else SIGN_NAMES[sign]


def image_name(url: str) -> str:
    """The file name a downloaded WebEmo image has: the last part of the URL's path (query and fragment dropped).

    For the release's URLs, which carry no query, this equals ``url.split('/')[-1]``, the rule of the community
    download scripts (ccivit/download_webEmo download_dataset.py, slifer0918/WEBEmo download.py).
    """
    return PurePosixPath(urlsplit(url).path).name


def _parse_list(list_file: Path, n_ids: int) -> list[tuple[int, str, int, str]]:
    """(line number, url, label id, raw line) for each non-blank line; a bad line is one UserError naming it."""
    if not list_file.is_file():
        raise UserError(f"{list_file}: no such WebEmo list file (train25.txt / test25.txt)")
    rows = []
    with list_file.open(encoding="utf-8-sig") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise UserError(f"{list_file}:{lineno}: expected 'URL LABEL_ID', got {line[:100]!r}")
            url, label = parts
            if not label.isdigit():
                raise UserError(f"{list_file}:{lineno}: label id {label!r} is not a number")
            label_id = int(label)
            if label_id >= n_ids:
                raise UserError(f"{list_file}:{lineno}: label id {label_id} is past the last id {n_ids - 1}")
            if not image_name(url):
                raise UserError(f"{list_file}:{lineno}: no file name in URL {url[:100]!r}")
            rows.append((lineno, url, label_id, line))
    return rows


def _index(image_dir: Path, wanted: set[str]) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for folder, _dirs, files in os.walk(image_dir):
        for name in files:
            if name in wanted:
                found.setdefault(name, []).append(Path(folder) / name)
    return found


def webemo_to_jsonl(
    list_file: str | Path,
    image_dir: str | Path,
    out: str | Path,
    level: int = 25,
    names: str | Path | None = None,
) -> ConvertReport:
    """Turn a WebEmo URL list plus the images downloaded from it into a JSONL the `jsonl` source reads.

    Each line ``URL LABEL_ID`` of `list_file` (train25.txt or test25.txt) becomes one row
    ``{"image": ..., "answer": ..., "label_id": ..., "url": ...}``: `image` is the downloaded file's path relative
    to `out`'s folder (so the recipe needs no `image_root`), `answer` the label name at `level` (25 fine names,
    7 level-2 names, or positive/negative), `label_id` the list's number. The image is looked up by
    `image_name(URL)` anywhere under `image_dir`, preferring a match in a folder named for the label id.

    Lines whose image is absent or empty are not written; they are counted in the returned report and copied, in
    the list's own format, to ``<out>.missing.txt`` so they can be downloaded again. A repeated file name is
    written once and counted. `names` replaces the built-in names (WebEmo's category.txt, or a plain list of 25
    names for level 25). Raises UserError, naming the file and line, on a malformed line, an unknown id, a name
    found in two places, or when no image at all is found.
    """
    list_file, image_dir, out = Path(list_file), Path(image_dir), Path(out)
    if level not in LEVELS:
        raise UserError(f"level {level!r}: WebEmo has levels 25, 7 and 2")
    categories = read_webemo_categories(names) if names is not None else WEBEMO_CATEGORIES
    if not image_dir.is_dir():
        raise UserError(f"{image_dir}: no such image folder (the images downloaded from {list_file.name})")
    rows = _parse_list(list_file, len(categories))
    report = ConvertReport(list_file=list_file, out=out, lines=len(rows))
    index = _index(image_dir, {image_name(url) for _, url, _, _ in rows})

    base = out.parent.resolve()
    written, missing, seen = [], [], set()
    for lineno, url, label_id, line in rows:
        name = image_name(url)
        candidates = index.get(name, [])
        if len(candidates) > 1:
            in_label = [p for p in candidates if p.parent.name == str(label_id)]
            if len(in_label) != 1:
                where = ", ".join(str(p.relative_to(image_dir)) for p in candidates[:3])
                raise UserError(
                    f"{list_file}:{lineno}: {name} is found in {len(candidates)} places under {image_dir} ({where}); "
                    "point the image folder at this list's own download"
                )
            candidates = in_label
        if not candidates or candidates[0].stat().st_size == 0:
            missing.append(line)
            continue
        if name in seen:
            report.duplicates += 1
            report.duplicate_lines.append(lineno)
            continue
        seen.add(name)
        answer = _name(categories, label_id, level)
        rel = Path(os.path.relpath(candidates[0].resolve(), base)).as_posix()
        written.append({"image": rel, "answer": answer, "label_id": label_id, "url": url})
        report.labels[answer] += 1

    if not written:
        raise UserError(
            f"{list_file}: none of its {len(rows)} images is under {image_dir} (file names are the last part of "
            "each URL, looked up in any sub-folder)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in written:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(out)
    missing_file = out.with_name(out.name + ".missing.txt")
    if missing:
        missing_file.write_text("\n".join(missing) + "\n", encoding="utf-8")
        report.missing_file = missing_file
    elif missing_file.exists():
        missing_file.unlink()  # a list from an earlier run would no longer be true
    report.written, report.missing = len(written), len(missing)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m mllmtune.data.convert webemo LIST IMAGE_DIR OUT [--level 25|7|2] [--names category.txt]``."""
    parser = argparse.ArgumentParser(prog="python -m mllmtune.data.convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="converter", required=True)
    web = sub.add_parser("webemo", help="WebEmo URL list + downloaded images -> JSONL (image, answer)")
    web.add_argument("list_file", help="train25.txt or test25.txt")
    web.add_argument("image_dir", help="the folder the list's images were downloaded into")
    web.add_argument("out", help="the JSONL to write, e.g. webemo/train.jsonl")
    web.add_argument("--level", type=int, choices=LEVELS, default=25, help="label level: 25, 7 or 2 (default 25)")
    web.add_argument("--names", help="category.txt of the release, to use instead of the built-in names")
    args = parser.parse_args(argv)
    try:
        report = webemo_to_jsonl(args.list_file, args.image_dir, args.out, level=args.level, names=args.names)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
