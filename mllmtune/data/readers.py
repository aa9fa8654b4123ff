"""Raw rows of the split a data source asks for: local parquet / JSONL / CSV files, image folders, hub data sets.

Each row is the file's own columns plus `_where` (file and row, for messages), `_base` (where relative image paths
start) and `_relpath` (the image path a split list names). Which rows are the split is decided by
`mllmtune.data.splits`; turning rows into examples is `mllmtune.data.sources`. Every parse failure is one line
naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from mllmtune.data.splits import IMAGE_SUFFIXES, json_lines
from mllmtune.errors import UserError

if TYPE_CHECKING:
    from mllmtune.data.sources import FileData

# Column names tried, in order, for each role when the recipe does not map it.
ALIASES = {
    "image": ["image", "images", "image_path", "img", "file", "path"],
    "question": ["question", "problem", "prompt", "query", "text"],  # POPE's question column is `text`
    "answer": ["answer", "label", "solution", "emotion"],
    "answers": ["answers"],
    "choices": ["choices", "options"],
    # ScienceQA's hint, asked first as "Context: ..." (lmms-eval tasks/scienceqa/utils.py: sqa_doc_to_text)
    "context": ["hint", "context"],
    "id": ["id", "question_id", "qid", "item_id", "uid"],
    "split": ["split"],
}
ALL = "all"  # the split that names the whole source
SUFFIXES = {"parquet": [".parquet"], "jsonl": [".jsonl", ".json"], "csv": [".csv", ".tsv"]}


def _candidates(path: Path, source: str, key: str) -> list[Path]:
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES[source])
    if not found:
        raise UserError(f"{key}.path {path}: no {'/'.join(SUFFIXES[source])} files")
    return found


def _image_folder(root: Path, key: str) -> list[dict]:
    rows = [
        {"image": str(f), "label": d.name, "_where": str(f), "_relpath": f.relative_to(root).as_posix()}
        for d in sorted(p for p in root.iterdir() if p.is_dir())
        for f in sorted(d.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not rows:
        raise UserError(f"{key}.path {root}: no label sub-folders with images (expected {root}/LABEL/*.jpg)")
    return rows


def _read_frame(file: Path, source: str, key: str):
    """One file as a DataFrame; a parse failure is one line naming the file (and line, where known)."""
    import pandas as pd

    try:
        if source == "parquet":
            return pd.read_parquet(file)
        if source == "csv":
            return pd.read_csv(file, sep="\t" if file.suffix == ".tsv" else ",")
        text = file.read_text(encoding="utf-8-sig")
        if file.suffix == ".json" and text.lstrip()[:1] == "[":
            return pd.DataFrame(json.loads(text))
        return pd.DataFrame(json_lines(text, f"{key}: {file}"))  # JSON lines; POPE ships them as `.json`
    except UserError:
        raise
    except Exception as exc:  # pyarrow, pandas and the codecs raise many kinds; each means the file is unreadable
        raise UserError(f"{key}: {file} is not a readable {source} file ({type(exc).__name__})") from None


def _file_rows(files: list[Path], spec: FileData, key: str, root: Path) -> tuple[list[dict], list[str]]:
    rows, columns = [], []
    for file in files:
        frame = _read_frame(file, spec.source, key)
        columns = columns or list(frame.columns)
        base = Path(spec.image_root).expanduser() if spec.image_root else file.parent
        for i, row in enumerate(frame.to_dict("records")):
            rows.append({**row, "_where": f"{file} row {i}", "_base": base})
    return rows, columns


def read_table(spec: FileData, key: str) -> tuple[list[dict], list[str]]:
    """Raw rows of the asked split (each with `_where`, the file and row for messages) and the column names."""
    from mllmtune.data import splits

    if spec.source == "hub":
        return _read_hub(spec, key)
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise UserError(f"{key}.path: {path} does not exist")
    # `split: all` takes the whole source on purpose (an out-of-domain test set never trained on); with a holdout or
    # a split list the split comes from elsewhere.
    whole = spec.holdout is not None or spec.split_list is not None or spec.split == ALL
    if spec.source == "imagefolder":
        if path.is_file():
            raise UserError(f"{key}.path {path}: source imagefolder needs a folder of label sub-folders")
        if not whole and not (path / spec.split).is_dir():
            raise splits.no_split(key, path, spec.split, f"no {spec.split}/ sub-folder")
        rows, columns = _image_folder(path if whole else path / spec.split, key), ["image", "label"]
    elif path.is_file():
        rows, columns = _file_rows([path], spec, key, path.parent)
        split_col = spec.columns.split or ("split" if "split" in columns else None)
        if split_col and not whole:
            rows = splits.filter_by_column(rows, split_col, spec.split, key, path)
    else:
        folder = path / spec.split if not whole and (path / spec.split).is_dir() else path
        files = _candidates(folder, spec.source, key)
        named = files if whole or folder != path else splits.files_of_split(files, spec.split)
        rows, columns = _file_rows(named or files, spec, key, path)
        if not named:
            split_col = spec.columns.split or ("split" if "split" in columns else None)
            if split_col is None:
                raise splits.no_split(
                    key, path, spec.split, f"no {spec.split}/ sub-folder, no file named for it and no split column"
                )
            rows = splits.filter_by_column(rows, split_col, spec.split, key, path)
    if spec.source != "imagefolder":
        image_col = spec.columns.image or next((c for c in ALIASES["image"] if c in columns), None)
        for row in rows:
            value = row.get(image_col) if image_col else None
            if isinstance(value, str):
                row["_relpath"] = Path(value).as_posix()
    if spec.split_list:
        listed_file = Path(spec.split_list).expanduser()
        listed_file = (
            listed_file if listed_file.is_absolute() else (path if path.is_dir() else path.parent) / listed_file
        )
        id_col = spec.columns.id or next((c for c in ALIASES["id"] if c in columns), None)
        for row in rows:
            row["_source_id"] = row.get(id_col) if id_col else None
        rows = splits.keep_listed(rows, splits.read_split_list(listed_file, f"{key}"), listed_file, key)
    return rows, columns


def _offline(spec: FileData, key: str, exc: Exception) -> UserError:
    return UserError(
        f"{key}.path {spec.path!r}: not cached and the hub cannot be reached ({str(exc).splitlines()[0][:120]}); "
        f"where there is network run `hf download --repo-type dataset {spec.path} --local-dir DIR`, then set "
        f"{key}.source: parquet and {key}.path: DIR"
    )


def _read_hub(spec: FileData, key: str) -> tuple[list[dict], list[str]]:
    import datasets

    if spec.split_list:
        raise UserError(f"{key}.split_list: a split list is for local sources; {key}.source is hub")
    # `split: all` or a holdout: the pool is every split the hub set ships, concatenated.
    whole = spec.split == ALL or spec.holdout is not None
    try:
        ds = datasets.load_dataset(spec.path, split=None if whole else spec.split, revision=spec.revision)
        if whole:
            ds = datasets.concatenate_datasets(list(ds.values()))
    except RuntimeError as exc:  # datasets 4+ no longer runs a data set's own loading script
        if "script" not in str(exc).lower():
            raise
        raise UserError(
            f"{key}.path {spec.path!r}: the hub copy is a data set with a loading script, which datasets "
            f"{datasets.__version__} no longer runs; download its data files (or the hub's parquet conversion) and "
            f"set {key}.source: parquet and {key}.path: DIR"
        ) from None
    except ValueError as exc:
        if "split" not in str(exc).lower():
            raise _offline(spec, key, exc) from None
        reason = str(exc).splitlines()[0][:160]
        raise UserError(f"{key}.split {spec.split!r}: not a split of {spec.path} ({reason})") from None
    except (ConnectionError, FileNotFoundError, OSError) as exc:
        raise _offline(spec, key, exc) from None
    for name, feature in ds.features.items():  # keep image bytes undecoded, as for local files
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(name, datasets.Image(decode=False))
        elif isinstance(getattr(feature, "feature", None), datasets.Image):
            ds = ds.cast_column(name, datasets.List(datasets.Image(decode=False)))
    rows = [{**row, "_where": f"{spec.path}:{spec.split} row {i}"} for i, row in enumerate(ds)]
    return rows, list(ds.column_names)
