"""Data sources beyond the embedded world: parquet, JSONL, CSV, image folders and hub data sets.

Every source ends in the same example dicts the world yields (`prompt`, `answer`, `image`, plus `labels` for
emotions or `answers`/`choices` for VQA), so training and evaluation do not know where data came from. Columns are
found by common names (EMO-R3's `problem`/`answer`/`images`, VQA's `question`/`answers`, ...) unless the recipe
maps them under `columns`. Images stay undecoded until used, so a 100k-image set is not held in memory as pixels.
The rows of the asked split come from `mllmtune.data.readers` (files, folders, the hub) and `mllmtune.data.splits`.
"""

from __future__ import annotations

import io
import json
import string
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mllmtune.data.readers import ALIASES, read_table
from mllmtune.data.splits import HoldOut
from mllmtune.errors import UserError

LABEL_SETS = {
    "mikels8": ["amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness"],
    "emotion6": ["anger", "disgust", "fear", "joy", "sadness", "surprise"],
}


class ColumnMap(BaseModel):
    """Which column plays which role; unset roles are looked up by their usual names (see `ALIASES`)."""

    model_config = ConfigDict(extra="forbid")
    image: str | None = None
    question: str | None = None
    answer: str | None = None
    answers: str | None = Field(None, description="VQA: the annotators' answers (list), for soft accuracy")
    choices: str | None = Field(None, description="multiple choice: the options (list)")
    context: str | None = Field(None, description="text asked before the question as 'Context: ...' (ScienceQA hint)")
    id: str | None = Field(None, description="the item's own id; default: a hash of its image and question")
    split: str | None = Field(None, description="a column naming each row's split")


class FileData(BaseModel):
    """A data set from a local file or folder, or a hub id (`source: hub`)."""

    model_config = ConfigDict(extra="forbid")
    source: Literal["parquet", "jsonl", "csv", "imagefolder", "hub"]
    path: str = Field(description="a file, a folder of files (or of label folders), or a hub data set id")
    split: str = Field(
        "train",
        description="the split: a hub split; locally the rows of split_list, else a sub-folder PATH/SPLIT, files "
        "named for it (emoset_test.parquet), or a split column; a single file as path is used whole; 'all': the "
        "whole source on purpose (an out-of-domain test set)",
    )
    split_list: str | None = Field(
        None,
        description="a JSON / JSONL / text file listing the split's images (paths under path, or entries holding one, "
        "like EmoSet's train.json) or ids",
    )
    holdout: HoldOut | None = Field(
        None, description="a deterministic held-out split of a source that ships none: split train or test"
    )
    require_image: bool = Field(False, description="drop rows without an image (ScienceQA's image questions)")
    revision: str | None = None
    task: Literal["emotion", "vqa"] = "emotion"
    columns: ColumnMap = Field(default_factory=ColumnMap)
    labels: Literal["mikels8", "emotion6"] | list[str] | None = Field(
        None, description="emotion label set; default: the labels the data holds"
    )
    prompt: str | None = Field(None, description="user text; {question} and {labels} are filled in")
    image_root: str | None = Field(None, description="base of relative image paths; default: the data file's folder")
    on_bad_image: Literal["skip", "fail"] = "fail"
    limit: int | None = Field(None, ge=1, description="use N rows: a seeded sample, stratified by label")


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


def _inspect(image) -> tuple[str | None, str | None, str | None]:
    """(why the image cannot be read or None, a hash of its bytes, its file path or None).

    `verify` reads the whole file without decoding the pixels; the same bytes give the content hash that ids and the
    train/test overlap check use.
    """
    from PIL import Image

    from mllmtune.evaluation.sampling import digest

    if not isinstance(image, LazyImage):  # a decoded image (PIL, from a hub data set)
        return None, digest(image.tobytes(), str(image.size), image.mode), None
    file = None
    try:
        data = image.data
        if not isinstance(data, bytes):
            file = str(Path(data).resolve())
            data = Path(data).read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except Exception as exc:  # PIL and the file system raise many kinds; any of them means the image is unusable
        return f"{type(exc).__name__}: {exc}", None, file
    return None, digest(data), file


def _list(value) -> list:
    if value is None or (isinstance(value, float) and value != value):
        return []
    if isinstance(value, str):
        return json.loads(value) if value.startswith("[") else [value]
    return [v["answer"] if isinstance(v, dict) else v for v in list(value)]


def label_key(text) -> str:
    """A label as compared: Unicode NFKC, outer whitespace dropped, inner runs of it one space, case folded.

    >>> label_key("  Ａｍｕｓｅｍｅｎｔ ")
    'amusement'
    """
    return " ".join(unicodedata.normalize("NFKC", str(text)).split()).casefold()


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value) or not str(value).strip()


def resolve_labels(spec: FileData, answers: list[str]) -> list[str]:
    """The recipe's label set, else the data's labels (normalised, so ' Amusement ' and 'amusement' are one)."""
    if isinstance(spec.labels, str):
        return LABEL_SETS[spec.labels]
    return list(spec.labels) if spec.labels else sorted({label_key(a) for a in answers if not _missing(a)})


def _emotion(row: dict, cols: dict, labels: list[str], spec: FileData, key: str) -> dict:
    from mllmtune.data.chat import emotion_prompt

    value = row.get(cols["answer"])
    if _missing(value):
        raise UserError(f"{row['_where']}: the answer is missing (column {cols['answer']!r})")
    raw = str(value).strip()
    label = next((lab for lab in labels if label_key(lab) == label_key(raw)), None)
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
    context = str(row.get(cols["context"]) or "").strip() if cols.get("context") else ""
    if context and context != "nan":
        question = f"Context: {context}\n{question}"
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


def _id(row: dict, cols: dict, image_sha: str | None, question: str) -> str:
    own = row.get(cols["id"]) if cols["id"] else None
    if own is not None and not (isinstance(own, float) and own != own):
        return str(int(own) if isinstance(own, float) and own.is_integer() else own)
    from mllmtune.evaluation.sampling import digest

    return digest(image_sha or "", question)


def load_examples(spec: FileData, key: str = "data") -> Examples:
    """Examples of a data source; `key` is where the spec sits in the recipe, for error messages.

    Every example carries a stable `id` (the source's own, else a hash of image bytes and question), the hash of its
    image bytes (`image_sha`) and its file (`image_file`), which the train/test overlap check compares.
    """
    from mllmtune.data import splits
    from mllmtune.evaluation.sampling import stratified_sample, unique_ids

    rows, columns = read_table(spec, key)
    vqa = spec.task == "vqa"
    cols = {
        "image": _column("image", spec, columns, key, required=False),
        "question": _column("question", spec, columns, key, required=vqa),
        "answer": _column("answer", spec, columns, key, required=not vqa),
        "answers": _column("answers", spec, columns, key, required=False) if vqa else None,
        "choices": _column("choices", spec, columns, key, required=False) if vqa else None,
        "context": _column("context", spec, columns, key, required=False),
        "id": _column("id", spec, columns, key, required=False),
    }
    if vqa and not (cols["answer"] or cols["answers"]):
        raise UserError(f"{key}: no answer or answers column (columns present: {', '.join(columns)})")
    images = [_image(row.get(cols["image"]), row.get("_base")) if cols["image"] else None for row in rows]
    if spec.require_image:
        rows, images = (
            [r for r, i in zip(rows, images, strict=True) if i is not None],
            [i for i in images if i is not None],
        )
    inspected = [_inspect(image) if image is not None else (None, None, None) for image in images]
    ids = unique_ids(
        [
            _id(row, cols, sha, str(row.get(cols["question"], "")) if cols["question"] else "")
            for row, (_, sha, _) in zip(rows, inspected, strict=True)
        ]
    )
    raw_answers = [r.get(cols["answer"]) if cols["answer"] else "" for r in rows]
    answers = [label_key(a) if not _missing(a) else "" for a in raw_answers]  # strata of a holdout and a limit
    keep = list(range(len(rows)))
    if spec.holdout is not None:
        shas = [sha for _, sha, _ in inspected]
        keep = splits.hold_out(keep, ids, spec.holdout, spec.split, None if vqa else answers, key, images=shas)
    if spec.limit:
        keep = stratified_sample(keep, spec.limit, [ids[i] for i in keep], None if vqa else (lambda i: answers[i]))
    labels = [] if vqa else resolve_labels(spec, [raw_answers[i] for i in keep])
    out = Examples()
    for i in keep:
        row, image, (problem, sha, file) = rows[i], images[i], inspected[i]
        if problem:
            if spec.on_bad_image == "fail":
                raise UserError(
                    f"{row['_where']}: unreadable image ({problem}); fix or remove it, or set {key}.on_bad_image: skip"
                )
            out.skipped += 1
            continue
        example = _vqa(row, cols, spec) if vqa else _emotion(row, cols, labels, spec, key)
        out.append(
            {
                **example,
                "image": image,
                "source_row": row["_where"],
                "id": ids[i],
                "image_sha": sha,
                "image_file": file,
            }
        )
    if not out:
        raise UserError(f"{key}: {spec.path} yielded no usable examples ({out.skipped} rows with unreadable images)")
    return out
