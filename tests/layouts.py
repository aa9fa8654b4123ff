"""Tiny replicas of real emotion data sets as they are distributed, for tests of the readers and converters.

Each `make_*(root)` writes one set under its own sub-folder of `root` (a few 8x8 images, every one with different
pixels, so no two images share content) plus the set's list/label files in their released format, and returns a
dict describing it:

- ``path``: what a recipe's `path` should name; ``source``: the recipe's `source`
- ``labels``: the set's label names
- ``items``: every image as ``{path relative to `path`: label}``
- ``splits``: ``{split: {path relative to `path`: label}}`` for the official splits; ``{}`` where the set ships none
  (Emotion6, FI: those need `holdout`)
- set-specific keys, documented per function.

Where the real format could not be confirmed, the docstring says which part is made up. Sources: docs/data.md.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pandas as pd
from PIL import Image

MIKELS8 = ["amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness"]
EMOTION6 = ["anger", "disgust", "fear", "joy", "sadness", "surprise"]
POSITIVE = {"amusement", "awe", "contentment", "excitement"}


def _image_bytes(seed: str, fmt: str = "JPEG") -> bytes:
    """An 8x8 RGB image whose pixels come from a hash of `seed`: different seeds, different content."""
    digest = hashlib.sha256(seed.encode()).digest() * 6  # 192 bytes = 8 * 8 * 3
    img = Image.frombytes("RGB", (8, 8), digest[:192])
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _write_image(path: Path, seed: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    path.write_bytes(_image_bytes(seed or str(path), fmt))
    return path


# --------------------------------------------------------------------------------------------------- EmoSet-118K

# info.json "emotion" of JingyuanYY/EmoSet (exact), and the attribute entries the fixture's annotations use, with
# their real indices in that info.json (the real file lists 254 scenes, 409 objects, 264 actions).
_EMOSET_EMOTION_IDX = {
    "amusement": 0,
    "awe": 1,
    "contentment": 2,
    "excitement": 3,
    "anger": 4,
    "disgust": 5,
    "fear": 6,
    "sadness": 7,
}
_EMOSET_SCENES = {
    "amusement_park": 4,
    "beach": 28,
    "cemetery": 57,
    "forest": 103,
    "mountain": 155,
    "stage": 214,
    "street": 216,
    "swamp": 220,
}
_EMOSET_OBJECTS = {"Balloon": 13, "Building": 48, "Car": 63, "Dog": 110, "Flower": 135, "Tree": 374}
_EMOSET_FACES = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5}
_EMOSET_ACTIONS = {
    "applauding": 2,
    "celebrating": 36,
    "crying": 51,
    "dancing ballet": 57,
    "hugging": 102,
    "laughing": 119,
}
_EMOSET_ATTRS = {  # per emotion: scene, objects, facial expression (or None), human action (or None)
    "amusement": ("amusement_park", ["Balloon"], "happy", "laughing"),
    "anger": ("street", ["Car"], "angry", None),
    "awe": ("mountain", ["Tree"], None, None),
    "contentment": ("beach", ["Dog"], "happy", "hugging"),
    "disgust": ("swamp", [], "disgust", None),
    "excitement": ("stage", ["Building"], None, "dancing ballet"),
    "fear": ("forest", ["Tree"], "fear", None),
    "sadness": ("cemetery", ["Flower"], "sad", "crying"),
}


def _label_map(mapping: dict) -> dict:
    return {"label2idx": dict(mapping), "idx2label": {str(i): k for k, i in mapping.items()}}


def make_emoset118k(root) -> dict:
    """EmoSet-118K as unzipped (github.com/JingyuanYY/EmoSet README.md, EmoSet.py, info.json).

    Layout under ``root/EmoSet-118K``: ``image/<emotion>/<emotion>_<n>.jpg``,
    ``annotation/<emotion>/<emotion>_<n>.json``, ``info.json``, and ``train.json`` / ``val.json`` / ``test.json``,
    each a JSON list of
    ``[emotion, image_id, "image/<emotion>/<image_id>.jpg", "annotation/<emotion>/<image_id>.json"]`` (four strings;
    the image path is the third). Two train, one val and one test image per emotion.

    Annotation keys: `image_id`, `emotion` (read by third-party loaders, e.g. chirazedrine/EmoGen emogen.py) and
    the attributes `brightness`, `colorfulness` (floats 0.0-1.0 in steps of 0.1), `scene`, `object` (a list),
    `facial_expression`, `human_action` (EmoSet.py; an attribute may be absent). The full key set of a real
    annotation file was not seen; values here are made up from info.json's vocabularies. info.json here holds the
    real emotion, brightness, colorfulness and facial-expression maps, and only the used scenes, objects and
    actions (with their real indices).

    Extra keys: ``split_lists`` ({split: path of its JSON}), ``annotations`` ({image path: annotation path}).
    """
    base = Path(root) / "EmoSet-118K"
    tenths = {f"{i / 10:.1f}": i for i in range(11)}
    info = {
        "emotion": _label_map(_EMOSET_EMOTION_IDX),
        "brightness": {"label2idx": tenths, "idx2label": {str(i): i / 10 for i in range(11)}},
        "colorfulness": {"label2idx": tenths, "idx2label": {str(i): i / 10 for i in range(11)}},
        "scene": _label_map(_EMOSET_SCENES),
        "object": _label_map(_EMOSET_OBJECTS),
        "facial_expression": _label_map(_EMOSET_FACES),
        "human_action": _label_map(_EMOSET_ACTIONS),
    }
    base.mkdir(parents=True, exist_ok=True)
    (base / "info.json").write_text(json.dumps(info, indent=2))

    entries = {"train": [], "val": [], "test": []}
    splits = {"train": {}, "val": {}, "test": {}}
    annotations = {}
    for e_idx, emotion in enumerate(MIKELS8):
        scene, objects, face, action = _EMOSET_ATTRS[emotion]
        for k, split in enumerate(["train", "train", "val", "test"]):
            image_id = f"{emotion}_{1000 + 137 * k + e_idx}"
            image, annotation = f"image/{emotion}/{image_id}.jpg", f"annotation/{emotion}/{image_id}.json"
            _write_image(base / image)
            ann = {
                "image_id": image_id,
                "emotion": emotion,
                "brightness": round(0.1 * ((e_idx + k) % 11), 1),
                "colorfulness": round(0.1 * ((3 * e_idx + k) % 11), 1),
                "scene": scene,
                "object": objects,
            }
            if face is not None:
                ann["facial_expression"] = face
            if action is not None:
                ann["human_action"] = action
            (base / annotation).parent.mkdir(parents=True, exist_ok=True)
            (base / annotation).write_text(json.dumps(ann))
            entries[split].append([emotion, image_id, image, annotation])
            splits[split][image] = emotion
            annotations[image] = annotation
    split_lists = {}
    for split, rows in entries.items():
        split_lists[split] = base / f"{split}.json"
        split_lists[split].write_text(json.dumps(rows, indent=4))
    items = {k: v for s in splits.values() for k, v in s.items()}
    return {
        "name": "EmoSet-118K",
        "root": base,
        "path": base,
        "source": "imagefolder",
        "labels": list(MIKELS8),
        "items": items,
        "splits": splits,
        "split_lists": split_lists,
        "annotations": annotations,
    }


# ------------------------------------------------------------------------------------------------------- EmoSet2k


def make_emoset2k(root) -> dict:
    """EMO-R3's EmoSet2k as a local copy of the hub data set (`fuyyy74/EmoSet2k`, used by SeerRay-Lab/emo-r3
    examples/qwen2_5_vl_3b_emor3.sh as ``fuyyy74/EmoSet2k@train`` / ``@test``).

    Layout under ``root/EmoSet2k``: ``data/train-00000-of-00001.parquet`` and ``data/test-00000-of-00001.parquet``
    (the hub's file naming, as in the same-sized copy LiangJian24/EmoSet: 2,100 train / 2,000 test rows) and a
    README.md whose YAML names them. Columns, as in fuyyy74/EmoSet2steps2k (emo-r3 history,
    examples/emo/old_pre_0818/analyze_dataset/dataset_analysis_results.txt): `images` (a list of one image stored as
    ``{"bytes", "path"}``), `problem` (the question; EMO-R3's loader puts the image where ``<image>`` stands),
    `course_grained` (sic: positive / negative / neutral) and `answer` (one of the 8 Mikels names, lower case).
    Made up: the question text and the `path` strings inside `images` (no such file exists: readers must use the
    bytes). One train and one test row per emotion, in MIKELS8 order.

    Extra keys: ``files`` ({split: parquet path}), ``rows`` ({split: [answer of each row, in order]}).
    """
    base = Path(root) / "EmoSet2k"
    (base / "data").mkdir(parents=True, exist_ok=True)
    question = "<image>Which emotion does this image evoke? Choose one of: " + ", ".join(MIKELS8) + "."
    files, rows_by_split = {}, {}
    for split in ["train", "test"]:
        rows = []
        for i, emotion in enumerate(MIKELS8):
            coarse = "neutral" if (split, i) == ("train", 2) else ("positive" if emotion in POSITIVE else "negative")
            name = f"emoset2k_{split}_{i}.jpg"
            rows.append(
                {
                    "images": [{"bytes": _image_bytes(f"emoset2k/{split}/{i}"), "path": name}],
                    "problem": question,
                    "course_grained": coarse,
                    "answer": emotion,
                }
            )
        files[split] = base / "data" / f"{split}-00000-of-00001.parquet"
        pd.DataFrame(rows).to_parquet(files[split], index=False)
        rows_by_split[split] = [r["answer"] for r in rows]
    (base / "README.md").write_text(
        "---\ndataset_info:\n  features:\n  - name: images\n    sequence: image\n"
        "  - name: problem\n    dtype: string\n"
        "  - name: course_grained\n    dtype: string\n  - name: answer\n    dtype: string\n  splits:\n"
        "  - name: train\n    num_examples: 8\n  - name: test\n    num_examples: 8\nconfigs:\n- config_name: default\n"
        "  data_files:\n  - split: train\n    path: data/train-*\n  - split: test\n    path: data/test-*\n---\n"
    )
    return {
        "name": "EmoSet2k",
        "root": base,
        "path": base / "data",
        "source": "parquet",
        "labels": list(MIKELS8),
        "columns": {"image": "images", "question": "problem", "answer": "answer"},
        "items": {},
        "splits": {s: {} for s in files},
        "files": files,
        "rows": rows_by_split,
    }


# ------------------------------------------------------------------------------------------------------- Emotion6

_E6_COLUMNS = ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
# (folder/file, valence, arousal, 7 probabilities). The first row is the example line of Emotion6's readme.txt.
_E6_ROWS = [
    ("disgust/1.jpg", 2.5, 3.8, [0.133333, 0.7, 0, 0.0666667, 0.1, 0, 0]),
    ("disgust/2.jpg", 3.1, 4.2, [0.1, 0.6, 0.2, 0, 0.1, 0, 0]),
    ("anger/1.jpg", 2.9, 5.9, [0.6, 0.1, 0.1, 0, 0.1, 0.1, 0]),
    ("anger/2.jpg", 4.6, 3.3, [0.1, 0, 0, 0.1, 0.1, 0, 0.7]),  # dominant: neutral
    ("fear/1.jpg", 3.0, 6.1, [0, 0, 0.8, 0, 0.1, 0.1, 0]),
    ("fear/2.jpg", 2.7, 4.4, [0, 0.1, 0.2, 0, 0.7, 0, 0]),  # dominant: sadness, folder: fear
    ("joy/1.jpg", 7.4, 5.2, [0, 0, 0, 0.9, 0, 0.1, 0]),
    ("joy/2.jpg", 6.8, 4.0, [0, 0, 0, 0.6, 0, 0.2, 0.2]),
    ("sadness/1.jpg", 2.2, 3.1, [0, 0, 0.1, 0, 0.9, 0, 0]),
    ("sadness/2.jpg", 3.4, 2.9, [0, 0, 0, 0, 0.5, 0, 0.5]),  # a tie: sadness and neutral
    ("surprise/1.jpg", 6.0, 6.3, [0, 0, 0.1, 0.2, 0, 0.7, 0]),
    ("surprise/2.jpg", 5.5, 5.8, [0, 0.1, 0, 0.1, 0, 0.8, 0]),
]


def make_emotion6(root) -> dict:
    """The Cornell Emotion6 database as unzipped (its readme.txt; Peng et al., CVPR 2015).

    Layout under ``root/Emotion6``: ``images/<keyword>/<n>.jpg`` for the six keywords anger, disgust, fear, joy,
    sadness, surprise (the folder name is the keyword used to search the image; 330 each in the real set), and
    ``ground_truth.txt``: a first line that is not data, then one tab-separated line per image,
    ``[image_filename] [valence] [arousal] [prob. anger] [prob. disgust] [prob. fear] [prob. joy] [prob. sadness]
    [prob. surprise] [prob. neutral]``, the file name relative to ``images/`` (e.g. ``disgust/1.jpg``). Made up:
    the header line's text and every value except the readme's example line (disgust/1.jpg, first data line).
    No official split. Two images per keyword; some distributions disagree with the folder (see ``dominant``).

    Extra keys: ``ground_truth`` (its path), ``dominant`` ({image: the most probable of the 7 columns, or
    None on a tie}).
    """
    base = Path(root) / "Emotion6"
    items, dominant, lines = (
        {},
        {},
        ["\t".join(f"[{c}]" for c in ("image_filename", "valence", "arousal", *(f"prob. {e}" for e in _E6_COLUMNS)))],
    )
    for name, valence, arousal, probs in _E6_ROWS:
        _write_image(base / "images" / name)
        items[name] = name.split("/")[0]
        top = max(probs)
        winners = [c for c, p in zip(_E6_COLUMNS, probs, strict=True) if p == top]
        dominant[name] = winners[0] if len(winners) == 1 else None
        lines.append("\t".join([name, f"{valence:g}", f"{arousal:g}", *(f"{p:g}" for p in probs)]))
    (base / "ground_truth.txt").write_text("\n".join(lines) + "\n")
    return {
        "name": "Emotion6",
        "root": base,
        "path": base / "images",
        "source": "imagefolder",
        "labels": list(EMOTION6),
        "items": items,
        "splits": {},
        "ground_truth": base / "ground_truth.txt",
        "dominant": dominant,
    }


# ------------------------------------------------------------------------------------------------------------- FI


def make_fi(root) -> dict:
    """FI (Flickr & Instagram; You et al., AAAI 2016) as the archive ``emotion_dataset.tar`` unpacks.

    Layout under ``root/FI``: ``emotion_dataset/<emotion>/<emotion>_<nnnn>.jpg`` for the 8 Mikels emotions, images
    only, no list or split file (dsikar/vidiq-hpc reports/18-fi-archive-analytics-report.md: 23,185 .jpg files in
    8 class folders). The ``<emotion>_<nnnn>`` file names are not confirmed for every copy (that report and one
    third-party loader read the label from the name's prefix). Three images per emotion; no official split.
    """
    base = Path(root) / "FI" / "emotion_dataset"
    items = {}
    for emotion in MIKELS8:
        for n in range(3):
            name = f"{emotion}/{emotion}_{n:04d}.jpg"
            _write_image(base / name)
            items[name] = emotion
    return {
        "name": "FI",
        "root": base.parent,
        "path": base,
        "source": "imagefolder",
        "labels": list(MIKELS8),
        "items": items,
        "splits": {},
    }


# --------------------------------------------------------------------------------------------------------- WebEmo

# category.txt of the WebEmo release, byte for byte as in github.com/slifer0918/WEBEmo (788 bytes, trailing spaces
# kept); github.com/ccivit/download_webEmo has the same text with CRLF line ends (813 bytes).
WEBEMO_CATEGORY_TXT = (
    "# Three level emotion hierarchy.\n"
    "labels=[('affection', 'love', '+'), \n"
    "\t('cheerfullness', 'joy', '+'), \n"
    "\t('confusion', 'confusion', '-'), \n"
    "\t('contentment', 'joy', '+'), \n"
    "\t('disappointment', 'sadness', '-'), \n"
    "\t('disgust', 'anger', '-'), \n"
    "\t('enthrallment', 'joy', '+'), \n"
    "\t('envy', 'anger', '-'),\n"
    "\t('exasperation', 'anger', '-'), \n"
    "\t('gratitude', 'love', '+'), \n"
    "\t('horror', 'fear', '-'), \n"
    "\t('irritabilty', 'anger', '-'), \n"
    "\t('lust', 'love', '+'), \n"
    "\t('neglect', 'sadness', '-'), \n"
    "\t('nervousness', 'fear', '-'), \n"
    "\t('optimism', 'joy', '+'), \n"
    "\t('pride', 'joy', '+'),\n"
    "\t('rage', 'anger', '-'), \n"
    "\t('relief', 'joy', '+'), \n"
    "\t('sadness', 'sadness', '-'), \n"
    "\t('shame', 'sadness', '-'), \n"
    "\t('suffering', 'sadness', '-'), \n"
    "\t('surprise', 'surprise', '+'), \n"
    "\t('sympathy', 'sadness', '-'),\n"
    "\t('zest', 'joy', '+')]"
)

# (url, label id, downloaded?) per split. The first train line is the README's example line; the other URLs are
# made up in the same shape. One train image failed to download.
WEBEMO_LINES = {
    "train": [
        ("https://as2.ftcdn.net/jpg/00/42/93/78/220_F_42937802_2rowA8aFZs20JZ2Iq6WKArKKaaj1BIv4.jpg", 0, True),
        ("https://as2.ftcdn.net/jpg/01/00/19/45/220_F_100194555_fixtureTrainAaaaaaaaaaaaaaaaaaa1.jpg", 5, True),
        ("https://as2.ftcdn.net/jpg/01/00/30/33/220_F_100303395_fixtureTrainBbbbbbbbbbbbbbbbbbb2.jpg", 11, True),
        ("https://as2.ftcdn.net/jpg/01/00/32/23/220_F_100322391_fixtureTrainCccccccccccccccccccc3.jpg", 2, True),
        ("https://as2.ftcdn.net/jpg/01/00/33/13/220_F_100331361_fixtureTrainDdddddddddddddddddddd4.jpg", 22, False),
        ("https://as2.ftcdn.net/jpg/01/00/51/88/220_F_100518884_fixtureTrainEeeeeeeeeeeeeeeeeeee5.jpg", 24, True),
    ],
    "test": [
        ("https://as2.ftcdn.net/jpg/02/11/22/33/220_F_211223344_fixtureTestAaaaaaaaaaaaaaaaaaaaa1.jpg", 1, True),
        ("https://as2.ftcdn.net/jpg/02/11/22/34/220_F_211223455_fixtureTestBbbbbbbbbbbbbbbbbbbbb2.jpg", 10, True),
        ("https://as2.ftcdn.net/jpg/02/11/22/35/220_F_211223566_fixtureTestCcccccccccccccccccccc3.jpg", 19, True),
        ("https://as2.ftcdn.net/jpg/02/11/22/36/220_F_211223677_fixtureTestDdddddddddddddddddddd4.jpg", 22, True),
    ],
}


def make_webemo(root) -> dict:
    """WebEmo (Panda et al., ECCV 2018) as released plus the images a user downloaded from its URL lists.

    Release files (github.com/ccivit/download_webEmo README.md, category.txt): ``train25.txt`` and ``test25.txt``,
    one ``URL LABEL_ID`` a line (a space between; the README's example line is the first train line here), and
    ``category.txt`` (exact copy, LF line ends). Downloads as ccivit's download_dataset.py lays them out:
    ``train/<label id>/<last part of the URL>`` and ``test/<label id>/<...>``; one train image is missing (a dead
    URL). Made up: every URL but the README's example. The lists end without a final newline.

    The set is not readable before conversion (`mllmtune.data.convert.webemo_to_jsonl`). ``path`` is None: a recipe
    names each converted file, ``jsonl[split]`` (``WebEmo/train.jsonl``, ``WebEmo/test.jsonl``), as its `path`, because
    ``WebEmo/train/`` and ``WebEmo/test/`` are the download folders and would be taken for split sub-folders.
    Extra keys: ``lists`` ({split: list file}), ``image_dirs`` ({split: download folder}), ``category_file``,
    ``lines`` ({split: [(url, label id)]}), ``missing`` ({split: [url]}); ``splits`` maps each downloaded image
    (relative to the WebEmo folder, as the converted `image` column has it) to its label id.
    """
    base = Path(root) / "WebEmo"
    base.mkdir(parents=True, exist_ok=True)
    (base / "category.txt").write_text(WEBEMO_CATEGORY_TXT)
    lists, image_dirs, lines, missing, splits = {}, {}, {}, {}, {}
    for split, rows in WEBEMO_LINES.items():
        lists[split] = base / f"{split}25.txt"
        lists[split].write_text("\n".join(f"{url} {label}" for url, label, _ in rows))
        image_dirs[split] = base / split
        image_dirs[split].mkdir(exist_ok=True)
        lines[split] = [(url, label) for url, label, _ in rows]
        missing[split] = [url for url, _, ok in rows if not ok]
        splits[split] = {}
        for url, label, ok in rows:
            if ok:
                rel = f"{split}/{label}/{url.split('/')[-1]}"
                _write_image(base / rel)
                splits[split][rel] = label
    return {
        "name": "WebEmo",
        "root": base,
        "path": None,
        "jsonl": {split: base / f"{split}.jsonl" for split in WEBEMO_LINES},
        "source": "jsonl",
        "labels": None,  # depends on the level chosen at conversion
        "items": {k: v for s in splits.values() for k, v in s.items()},
        "splits": splits,
        "lists": lists,
        "image_dirs": image_dirs,
        "category_file": base / "category.txt",
        "lines": lines,
        "missing": missing,
    }
