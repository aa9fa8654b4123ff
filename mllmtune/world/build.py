"""Build and cache the embedded world: EmoScenes, the general-knowledge set, and the pretrained tiny base.

The build lands in `$MLLMTUNE_HOME/world/v<VERSION>-<size>/` (default home `~/.cache/mllmtune`) and is rebuilt
only when `WORLD_VERSION` changes. Sizes: `default` (the real world, about 16 minutes on 2 cores) and `micro`
(seconds, for tests); `MLLMTUNE_WORLD_SIZE` picks the one `model.id: world` refers to.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mllmtune.world.model import SIZES, ModelSize

WORLD_VERSION = "5"
DOMAINS = ("photo", "art", "web")


@dataclass(frozen=True)
class WorldSize:
    emo_train: dict[str, int]
    emo_test: dict[str, int]
    general_train: dict[str, int]
    general_test: dict[str, int]
    model: ModelSize
    pretrain_epochs: float
    vision_images: int
    vision_epochs: float
    pretrain_lr: float = 1e-3
    pretrain_batch: int = 32
    vision_lr: float = 2e-3


WORLD_SIZES = {
    "default": WorldSize(
        emo_train={"photo": 4000, "art": 1200, "web": 1200},
        emo_test={"photo": 480, "art": 360, "web": 360},
        general_train={
            "vqa": 12000,
            "caption": 6000,
            "digits": 4000,
            "emotion_text": 8000,
            "describe": 10000,
            "reasoning_text": 3000,
        },
        general_test={"vqa": 240, "caption": 160, "digits": 200, "emotion_text": 200},
        model=SIZES["default"],
        pretrain_epochs=1.0,
        vision_images=30000,
        vision_epochs=4,
    ),
    "micro": WorldSize(
        emo_train={"photo": 48, "art": 24, "web": 24},
        emo_test={"photo": 16, "art": 12, "web": 8},
        general_train={
            "vqa": 40,
            "caption": 20,
            "digits": 20,
            "emotion_text": 20,
            "describe": 20,
            "reasoning_text": 10,
        },
        general_test={"vqa": 8, "caption": 4, "digits": 4, "emotion_text": 4},
        model=SIZES["micro"],
        pretrain_epochs=1.0,
        vision_images=60,
        vision_epochs=1,
        pretrain_batch=16,
    ),
}


@dataclass
class World:
    root: Path
    size: str
    version: str = field(default="")

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def info(self) -> dict:
        path = self.root / "build.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def home() -> Path:
    return Path(os.environ.get("MLLMTUNE_HOME", Path.home() / ".cache" / "mllmtune")).expanduser()


def current_size() -> str:
    size = os.environ.get("MLLMTUNE_WORLD_SIZE", "default")
    if size not in WORLD_SIZES:
        from mllmtune.errors import UserError

        raise UserError(f"MLLMTUNE_WORLD_SIZE={size!r} is not a world size; known: {', '.join(WORLD_SIZES)}")
    return size


def world_root(size: str | None = None) -> Path:
    return home() / "world" / f"v{WORLD_VERSION}-{size or current_size()}"


def _save_rows(rows: list[dict], path: Path) -> None:
    import datasets

    ds = datasets.Dataset.from_list(rows)
    if "image" in ds.column_names:
        ds = ds.cast_column("image", datasets.Image())
    ds.save_to_disk(str(path))


def build_data(root: Path, spec: WorldSize, seed: int = 0, log=print) -> None:
    from mllmtune.world.general import emoscene_rows, general_rows

    for i, domain in enumerate(DOMAINS):
        for split, sizes in (("train", spec.emo_train), ("test", spec.emo_test)):
            t = time.time()
            rows = emoscene_rows(domain, split, sizes[domain], seed=seed + 17 * i)
            _save_rows(rows, root / "data" / f"emoscenes-{domain}" / split)
            log(f"  emoscenes-{domain}/{split}: {len(rows)} images ({time.time() - t:.1f}s)")
    for split, sizes in (("train", spec.general_train), ("test", spec.general_test)):
        t = time.time()
        rows = general_rows(split, sizes, seed=seed)
        _save_rows(rows, root / "data" / "general" / split)
        log(f"  general/{split}: {len(rows)} rows ({time.time() - t:.1f}s)")


def load_world_split(
    name: str, split: str, limit: int | None = None, size: str | None = None, columns: list[str] | None = None
) -> list[dict]:
    """Rows of a world data set as dicts (images as PIL), building the world's data on first use; `columns` keeps
    only those (without the image column, no image is decoded)."""
    import datasets

    root = ensure_world_data(size)
    ds = datasets.load_from_disk(str(root / "data" / name / split))
    if columns is not None:
        ds = ds.select_columns(columns)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return ds.to_list() if "image" not in ds.column_names else [ds[i] for i in range(len(ds))]


def _corpus() -> list[str]:
    from mllmtune.data.chat import emotion_prompt
    from mllmtune.world.general import STRUCTURED_INSTRUCTION
    from mllmtune.world.scenes import LABELS

    texts = [STRUCTURED_INSTRUCTION] + [emotion_prompt(labels) for labels in LABELS.values()]
    texts += [" ".join(labels) for labels in LABELS.values()]
    for row in load_world_split("general", "train", columns=["question", "answer"]):  # no image decoded
        texts += [row["question"], row["answer"]]
    return texts


def pretrain_examples() -> list[dict]:
    rows = load_world_split("general", "train")
    return [{"prompt": r["question"], "answer": r["answer"], "image": r["image"]} for r in rows]


def build_world(size: str | None = None, seed: int = 0, log=print, progress=None) -> World:
    """Build the world from scratch into a temporary folder, then move it into place (never half-written)."""
    import torch

    from mllmtune.runtime import bf16_is_fast
    from mllmtune.stages.sft import SFTStage, run_sft
    from mllmtune.world.model import IMAGE_SIZE, PATCH_SIZE, build_model, build_processor, train_tokenizer
    from mllmtune.world.vision import pretrain_vision, vision_data

    size = size or current_size()
    spec = WORLD_SIZES[size]
    root = world_root(size)
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    torch.manual_seed(seed)
    random.seed(seed)
    log(f"building the embedded world ({size}) in {root}")
    # load_world_split reads from the final location; point it at the temporary one while building.
    os.environ["_MLLMTUNE_WORLD_BUILDING"] = str(tmp)
    try:
        # Drawing the vision stage's images (single-threaded Python, 27.5 s for the default world) overlaps the
        # data sets' rendering in a second process: the same images, whichever process draws them.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            drawn = pool.submit(vision_data, spec.vision_images, seed, IMAGE_SIZE // PATCH_SIZE, IMAGE_SIZE)
            build_data(tmp, spec, seed, log)
            t_data = time.time() - t0
            tokenizer = train_tokenizer(_corpus(), spec.model.vocab)
            processor = build_processor(tokenizer)
            model = build_model(tokenizer, spec.model, seed)
            t1 = time.time()
            train_images, held_images, t_draw = drawn.result()
        tower = model.model.vision_tower
        vision_acc = pretrain_vision(
            tower,
            processor.image_processor,
            train_images,
            held_images,
            spec.vision_epochs,
            seed,
            lr=spec.vision_lr,
            progress=progress,
        )
        t_vision = time.time() - t1
        log(f"  vision tower pretrained in {t_vision:.0f}s; held-out head accuracy: {vision_acc}")
        tower.requires_grad_(False)  # frozen in the language stage, as in LLaVA-1.5
        examples = pretrain_examples()
        random.Random(seed).shuffle(examples)
        stage = SFTStage(
            epochs=spec.pretrain_epochs,
            learning_rate=spec.pretrain_lr,
            batch_size=spec.pretrain_batch,
            warmup_ratio=0.03,
            weight_decay=0.01,
            logging_steps=25,
            # Buckets of similar length cut the padding: random batches pad nearly every batch to the long
            # structured answers (1327 s against 586 s for this stage in one trial each).
            batching="length_buckets",
            mixed_precision="bf16" if bf16_is_fast() else "no",
        )
        t1 = time.time()
        summary = run_sft(
            model, processor, examples, stage, tmp / "pretrain", seed, progress=progress, label="pretraining base"
        )
        t_train = time.time() - t1
        tower.requires_grad_(True)
    finally:
        os.environ.pop("_MLLMTUNE_WORLD_BUILDING", None)
    shutil.rmtree(tmp / "pretrain", ignore_errors=True)
    model.save_pretrained(tmp / "model")
    processor.save_pretrained(tmp / "model")
    info = {
        "version": WORLD_VERSION,
        "size": size,
        "seed": seed,
        "spec": asdict(spec),
        "data_s": round(t_data, 1),
        "vision_s": round(t_vision, 1),
        "vision_images_s": round(t_draw, 1),
        "vision_accuracy": vision_acc,
        "pretrain_s": round(t_train, 1),
        "mixed_precision": stage.mixed_precision,
        "build_s": round(time.time() - t0, 1),
        "pretrain": summary,
        "params": sum(p.numel() for p in model.parameters()),
    }
    (tmp / "build.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    log(
        f"world built in {info['build_s']}s (data {info['data_s']}s, vision {info['vision_s']}s, "
        f"language pretraining {info['pretrain_s']}s)"
    )
    return World(root, size, WORLD_VERSION)


def _lock(size: str):
    from filelock import FileLock

    (home() / "world").mkdir(parents=True, exist_ok=True)
    return FileLock(str(home() / "world" / f"v{WORLD_VERSION}-{size}.lock"))


def ensure_world_data(size: str | None = None) -> Path:
    building = os.environ.get("_MLLMTUNE_WORLD_BUILDING")
    if building:
        return Path(building)
    return ensure_world(size).root


def ensure_world(size: str | None = None, log=print, progress=None) -> World:
    size = size or current_size()
    root = world_root(size)
    if not (root / "build.json").is_file():
        with _lock(size):
            if not (root / "build.json").is_file():
                return build_world(size, log=log, progress=progress)
    return World(root, size, WORLD_VERSION)
