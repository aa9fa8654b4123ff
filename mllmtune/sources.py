"""Data sources beyond the embedded world: parquet, JSONL, CSV, image folders and hub data sets.

Every source ends in the same example dicts the world yields (`prompt`, `answer`, `image`, plus `labels` for
emotions or `answers`/`choices` for VQA), so training and evaluation do not know where data came from. Columns are
found by common names (EMO-R3's `problem`/`answer`/`images`, VQA's `question`/`answers`, ...) unless the recipe
maps them under `columns`. Images stay undecoded until used, so a 100k-image set is not held in memory as pixels.
"""

from __future__ import annotations

import io
import json
import string
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mllmtune.errors import UserError

LABEL_SETS = {
    "mikels8": ["amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness"],
    "emotion6": ["anger", "disgust", "fear", "joy", "sadness", "surprise"],
}
# Column names tried, in order, for each role when the recipe does not map it.
ALIASES = {
    "image": ["image", "images", "image_path", "img", "file", "path"],
    "question": ["question", "problem", "prompt", "query"],
    "answer": ["answer", "label", "solution", "emotion"],
    "answers": ["answers"],
    "choices": ["choices", "options"],
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SUFFIXES = {"parquet": [".parquet"], "jsonl": [".jsonl", ".json"], "csv": [".csv", ".tsv"]}


class ColumnMap(BaseModel):
    """Which column plays which role; unset roles are looked up by their usual names (see `ALIASES`)."""

    model_config = ConfigDict(extra="forbid")
    image: str | None = None
    question: str | None = None
    answer: str | None = None
    answers: str | None = Field(None, description="VQA: the annotators' answers (list), for soft accuracy")
    choices: str | None = Field(None, description="multiple choice: the options (list)")


class FileData(BaseModel):
    """A data set from a local file or folder, or a hub id (`source: hub`)."""

    model_config = ConfigDict(extra="forbid")
    source: Literal["parquet", "jsonl", "csv", "imagefolder", "hub"]
    path: str = Field(description="a file, a folder of files (or of label folders), or a hub data set id")
    split: str = Field("train", description="hub split; in a local folder, a sub-folder or file-name prefix")
    revision: str | None = None
    task: Literal["emotion", "vqa"] = "emotion"
    columns: ColumnMap = Field(default_factory=ColumnMap)
    labels: Literal["mikels8", "emotion6"] | list[str] | None = Field(
        None, description="emotion label set; default: the labels the data holds"
    )
    prompt: str | None = Field(None, description="user text; {question} and {labels} are filled in")
    image_root: str | None = Field(None, description="base of relative image paths; default: the data file's folder")
    on_bad_image: Literal["skip", "fail"] = "fail"
    limit: int | None = Field(None, ge=1, description="use only the first N rows")


class Examples(list):
    """A list of examples that also says how many rows were skipped for unreadable images."""

    skipped: int = 0


class LazyImage:
    """An image read and decoded when first used; behaves like the PIL image it stands for."""

    def __init__(self, data: bytes | str):
        self.data = data

    def open(self):
        from PIL import Image

        with Image.open(io.BytesIO(self.data) if isinstance(self.data, bytes) else self.data) as img:
            img.load()
            return img

    def convert(self, mode: str):
        return self.open().convert(mode)

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "data":
            raise AttributeError(name)
        return getattr(self.open(), name)


def _files(path: Path, split: str, source: str) -> list[Path]:
    if path.is_file():
        return [path]
    folder = path / split if (path / split).is_dir() else path
    found = sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES[source])
    of_split = [p for p in found if p.name.startswith(split)]
    if not (of_split or found):
        raise UserError(f"data.path {path}: no {'/'.join(SUFFIXES[source])} files in {folder}")
    return of_split or found


def _read_table(spec: FileData, key: str) -> tuple[list[dict], list[str]]:
    """Raw rows (each with `_where`, the file and row for messages) and the column names."""
    import pandas as pd

    if spec.source == "hub":
        return _read_hub(spec, key)
    path = Path(spec.path).expanduser()
    if not path.exists():
        raise UserError(f"{key}.path: {path} does not exist")
    if spec.source == "imagefolder":
        root = path / spec.split if (path / spec.split).is_dir() else path
        rows = [
            {"image": str(f), "label": d.name, "_where": str(f)}
            for d in sorted(p for p in root.iterdir() if p.is_dir())
            for f in sorted(d.iterdir())
            if f.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not rows:
            raise UserError(f"{key}.path {root}: no label sub-folders with images (expected {root}/LABEL/*.jpg)")
        return rows, ["image", "label"]
    rows, columns = [], []
    for file in _files(path, spec.split, spec.source):
        if spec.source == "parquet":
            frame = pd.read_parquet(file)
        elif spec.source == "csv":
            frame = pd.read_csv(file, sep="\t" if file.suffix == ".tsv" else ",")
        else:
            lines = [line for line in file.read_text().splitlines() if line.strip()]
            frame = pd.DataFrame(json.loads(line) for line in lines) if file.suffix == ".jsonl" else None
            frame = frame if frame is not None else pd.DataFrame(json.loads(file.read_text()))
        columns = columns or list(frame.columns)
        base = Path(spec.image_root).expanduser() if spec.image_root else file.parent
        for i, row in enumerate(frame.to_dict("records")):
            rows.append({**row, "_where": f"{file} row {i}", "_base": base})
    return rows, columns


def _read_hub(spec: FileData, key: str) -> tuple[list[dict], list[str]]:
    import datasets

    try:
        ds = datasets.load_dataset(spec.path, split=spec.split, revision=spec.revision)
    except (ConnectionError, FileNotFoundError, OSError, ValueError) as exc:
        raise UserError(
            f"{key}.path {spec.path!r}: not cached and the hub cannot be reached ({str(exc).splitlines()[0][:120]}); "
            f"where there is network run `hf download --repo-type dataset {spec.path} --local-dir DIR`, then set "
            f"{key}.source: parquet and {key}.path: DIR"
        ) from None
    for name, feature in ds.features.items():  # keep image bytes undecoded, as for local files
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(name, datasets.Image(decode=False))
        elif isinstance(getattr(feature, "feature", None), datasets.Image):
            ds = ds.cast_column(name, datasets.List(datasets.Image(decode=False)))
    if spec.limit:
        ds = ds.select(range(min(spec.limit, len(ds))))
    rows = [{**row, "_where": f"{spec.path}:{spec.split} row {i}"} for i, row in enumerate(ds)]
    return rows, list(ds.column_names)


def _column(role: str, spec: FileData, columns: list[str], key: str, required: bool) -> str | None:
    name = getattr(spec.columns, role)
    if name is not None and name not in columns:
        raise UserError(
            f"{key}: column {name!r} is missing (columns present: {', '.join(map(str, columns))}); "
            f"fix {key}.columns.{role}"
        )
    name = name or next((c for c in ALIASES[role] if c in columns), None)
    if name is None and required:
        raise UserError(
            f"{key}: no {role} column (tried {', '.join(ALIASES[role])}; columns present: "
            f"{', '.join(map(str, columns))}); set {key}.columns.{role}"
        )
    return name


def _image(value, base: Path | None):
    """A LazyImage for any way a table stores an image: PIL, bytes, {bytes, path}, a path, or a list of those."""
    if isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and not isinstance(value, bytes)):
        value = list(value)
        value = value[0] if value else None
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if hasattr(value, "convert"):
        return value
    if isinstance(value, str):
        path = Path(value).expanduser()
        value = str(path if path.is_absolute() or base is None else base / path)
    return LazyImage(value)


def _check(image) -> str | None:
    """Why an image cannot be read, or None; `verify` reads the whole file without decoding the pixels."""
    if not isinstance(image, LazyImage):
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image.data) if isinstance(image.data, bytes) else image.data) as img:
            img.verify()
    except Exception as exc:  # PIL raises many kinds; any of them means the image is unusable
        return f"{type(exc).__name__}: {exc}"
    return None


def _list(value) -> list:
    if value is None or (isinstance(value, float) and value != value):
        return []
    if isinstance(value, str):
        return json.loads(value) if value.startswith("[") else [value]
    return [v["answer"] if isinstance(v, dict) else v for v in list(value)]


def resolve_labels(spec: FileData, answers: list[str]) -> list[str]:
    if isinstance(spec.labels, str):
        return LABEL_SETS[spec.labels]
    return list(spec.labels) if spec.labels else sorted({a for a in answers if a})


def _emotion(row: dict, cols: dict, labels: list[str], spec: FileData, key: str) -> dict:
    from mllmtune.data import emotion_prompt

    raw = str(row[cols["answer"]]).strip()
    label = next((lab for lab in labels if lab.lower() == raw.lower()), None)
    if label is None:
        raise UserError(f"{row['_where']}: answer {raw!r} is not one of {key}.labels ({', '.join(labels)})")
    question = str(row[cols["question"]]).replace("<image>", "").strip() if cols["question"] else None
    if spec.prompt:
        prompt = spec.prompt.format(question=question or "", labels=", ".join(labels))
    else:
        prompt = question or emotion_prompt(labels)
    return {"prompt": prompt, "answer": label, "labels": labels}


def _vqa(row: dict, cols: dict, spec: FileData) -> dict:
    question = str(row[cols["question"]]).replace("<image>", "").strip()
    answers = [str(a) for a in _list(row.get(cols["answers"])) if str(a).strip()] if cols["answers"] else []
    answer = row.get(cols["answer"]) if cols["answer"] else None
    choices = [str(c) for c in _list(row.get(cols["choices"]))] if cols["choices"] else []
    if answer is None or (isinstance(answer, float) and answer != answer):
        if not answers:
            raise UserError(f"{row['_where']}: no answer (the answer and answers columns are empty)")
        answer = Counter(answers).most_common(1)[0][0]
    prompt = spec.prompt.format(question=question, labels="") if spec.prompt else question
    example = {"answers": answers or [str(answer)], "choices": choices}
    if choices:
        letters = string.ascii_uppercase[: len(choices)]
        if isinstance(answer, int) or str(answer).isdigit():
            answer = letters[int(answer)]
        elif str(answer) in choices:
            answer = letters[choices.index(str(answer))]
        prompt += "\n" + "\n".join(f"{L}. {c}" for L, c in zip(letters, choices, strict=False))
        prompt += "\nAnswer with the option's letter from the given choices directly."
    return {**example, "prompt": prompt, "answer": str(answer).strip()}


def load_examples(spec: FileData, key: str = "data") -> Examples:
    """Examples of a data source; `key` is where the spec sits in the recipe, for error messages."""
    rows, columns = _read_table(spec, key)
    if spec.limit:
        rows = rows[: spec.limit]
    vqa = spec.task == "vqa"
    cols = {
        "image": _column("image", spec, columns, key, required=False),
        "question": _column("question", spec, columns, key, required=vqa),
        "answer": _column("answer", spec, columns, key, required=not vqa),
        "answers": _column("answers", spec, columns, key, required=False) if vqa else None,
        "choices": _column("choices", spec, columns, key, required=False) if vqa else None,
    }
    if vqa and not (cols["answer"] or cols["answers"]):
        raise UserError(f"{key}: no answer or answers column (columns present: {', '.join(columns)})")
    labels = [] if vqa else resolve_labels(spec, [str(r[cols["answer"]]).strip() for r in rows])
    out = Examples()
    for row in rows:
        image = _image(row.get(cols["image"]), row.get("_base")) if cols["image"] else None
        problem = _check(image) if image is not None else None
        if problem:
            if spec.on_bad_image == "fail":
                raise UserError(
                    f"{row['_where']}: unreadable image ({problem}); fix or remove it, or set {key}.on_bad_image: skip"
                )
            out.skipped += 1
            continue
        example = _vqa(row, cols, spec) if vqa else _emotion(row, cols, labels, spec, key)
        out.append({**example, "image": image, "source_row": row["_where"]})
    if not out:
        raise UserError(f"{key}: {spec.path} yielded no usable examples ({out.skipped} rows with unreadable images)")
    return out
