"""The run record and its append-only store.

Every finished run (success, failure or cancellation) becomes one JSON line in ``<results>/runs.jsonl``. The file
is only ever appended to, under a file lock, one complete line per ``os.write``, so concurrent runs of a sweep can
share it and a crash can at worst leave one partial last line, which readers skip with a warning.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Hashable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict, field_validator

from mllmtune.errors import UserError

SCHEMA_VERSION = 1
RUNS_FILE = "runs.jsonl"
LOCK_TIMEOUT_S = 120.0

Status = Literal["success", "failed", "cancelled"]


class RunRecord(BaseModel):
    """One run, complete enough to stand alone: recipe, model, scores and the baseline it is compared against."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    created_at: str
    status: Status
    error: str | None = None
    recipe: dict[str, Any]
    recipe_hash: str
    name: str
    strategy: str
    family: str
    stage: str
    seed: int
    model: dict[str, Any]
    trainable_params: int
    total_params: int
    wall_s: float
    peak_mem_mb: float | None = None
    # A metric that is NaN or infinite is left out (absent reads as not measured); records of earlier versions wrote
    # it as null, so null must still read back.
    scores: dict[str, dict[str, float | None]] = {}
    baseline: dict[str, dict[str, float | None]] | None = None
    # The zero-shot run each baseline score comes from (benchmark key -> run id): the report pairs items against it.
    baseline_runs: dict[str, str] = {}
    train: dict[str, Any] = {}
    artifacts: dict[str, str] = {}
    provenance: dict[str, Any] = {}

    @field_validator("scores", "baseline")
    @classmethod
    def _finite_scores(cls, value: dict | None) -> dict | None:
        if value is None:
            return None
        return {key: {m: v for m, v in metrics.items() if _finite(v)} for key, metrics in value.items()}

    @field_validator("train")
    @classmethod
    def _finite_train(cls, value: dict) -> dict:
        return {k: v for k, v in value.items() if _finite(v)}

    @field_validator("created_at")
    @classmethod
    def _iso_utc(cls, value: str) -> str:
        """Reject timestamps we could not order later; 'latest' depends on them."""
        if _parse_ts(value) is None:
            raise ValueError(f"created_at must be an ISO-8601 timestamp with a timezone, got {value!r}")
        return value


def now_iso() -> str:
    """The current UTC time as ISO-8601, the format ``created_at`` expects."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _parse_ts(value: str) -> datetime | None:
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return ts if ts.tzinfo is not None else None


def _slug(text: str, max_len: int = 48) -> str:
    """File-name-safe lowercase slug, so run ids work as directory names everywhere."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "run"


def new_run_id(name: str) -> str:
    """A run id that sorts by start time and is unique even for same-named runs started in the same second.

    >>> rid = new_run_id("SFT full/lr=1e-5")
    >>> rid[15:], len(rid.rsplit("-", 1)[1])  # doctest: +ELLIPSIS
    ('-sft-full-lr-1e-5-...', 8)
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{_slug(name)}-{secrets.token_hex(4)}"


class Results:
    """The results folder: the one place its layout is known.

    ```
    runs.jsonl              the run table, one record per line (runs.jsonl.lock while a record is appended)
    zero-shot.lock          held while a base model's zero-shot row is looked for or scored
    runs/RUN_ID/            one run: predictions/KEY.jsonl, model/ (tuned weights), checkpoints/, export/
    report/                 what `mllmtune report` writes
    perf.csv                what `mllmtune perf` writes
    ```
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    @property
    def table(self) -> Path:
        return self.root / RUNS_FILE

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def perf(self) -> Path:
        return self.root / "perf.csv"

    def run(self, run_id: str) -> Path:
        """A run's folder, checked to stay inside the results folder."""
        return inside(self.root, self.root / "runs" / check_run_id(run_id))

    def predictions_dir(self, run_id: str) -> Path:
        return self.root / "runs" / _safe_name(run_id) / "predictions"

    def predictions(self, run_id: str, benchmark_key: str) -> Path:
        return self.predictions_dir(run_id) / f"{_safe_name(benchmark_key)}.jsonl"

    def model(self, run_id: str) -> Path:
        return self.run(run_id) / "model"

    def checkpoints(self, run_id: str) -> Path:
        return self.run(run_id) / "checkpoints"

    def has_predictions(self) -> bool:
        return (self.root / "runs").is_dir()

    def record(self, *, status: Status, t0: float | None = None, **fields: Any) -> RunRecord:
        """Build a run record: the one place records are made. It stamps the time, the peak memory, the wall time
        since `t0` and the provenance, and stores artifact paths relative to this folder (`portable`)."""
        from mllmtune.runs.provenance import peak_memory_mb, provenance

        if fields.get("artifacts"):
            fields["artifacts"] = portable(self.root, fields["artifacts"])
        if t0 is not None:
            fields["wall_s"] = round(time.time() - t0, 2)
        fields.setdefault("peak_mem_mb", peak_memory_mb())
        return RunRecord(created_at=now_iso(), status=status, provenance=provenance(), **fields)


def runs_file(results_dir_or_file: str | os.PathLike[str]) -> Path:
    """``<results>/runs.jsonl`` for a results folder; a path to a file is returned as it is."""
    path = Path(results_dir_or_file)
    if path.is_dir():
        return Results(path).table
    return path if path.suffix == ".jsonl" or path.is_file() else Results(path).table


def check_writable(results_dir: str | os.PathLike[str]) -> Path:
    """Create the results folder and prove we can write there, before hours of training are spent.

    Raises :class:`UserError` with one line naming the folder and the reason.
    """
    path = Path(results_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-test-") as handle:
            handle.write(b"ok")
            handle.flush()
    except OSError as exc:
        raise UserError(f"results folder {path} is not writable: {exc.strerror or exc}") from exc
    return path


def zero_shot_lock(results_dir: str | os.PathLike[str]) -> FileLock:
    """Held while a run looks for, or scores, the base model's zero-shot row (no timeout: scoring a large model on
    a full benchmark takes as long as it takes)."""
    path = Path(results_dir)
    path.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path / "zero-shot.lock"))


def _finite(value: Any) -> bool:
    """False only for a float that is NaN or infinite (what JSON would have to write as null)."""
    return not isinstance(value, float) or math.isfinite(value)


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_run_id(run_id: str) -> str:
    """A run id as the store writes them (letters, digits, '.', '_', '-'; no '..'), before it touches a path."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise UserError(f"{run_id!r} is not a run id (letters, digits, '.', '_' and '-', as `mllmtune report` lists)")
    return run_id


def portable(results: str | os.PathLike[str], artifacts: dict[str, Any]) -> dict[str, str]:
    """Artifact paths (relative to the working directory, or absolute) as a record stores them: relative to the
    results folder when inside it, else absolute; so every command finds them from any working directory, and a
    moved results folder keeps its artifacts."""
    root, out = Path(results).resolve(), {}
    for key, value in artifacts.items():
        path = Path(value).resolve()
        out[key] = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    return out


def artifact(results: str | os.PathLike[str], value: str) -> Path:
    """The path a record's artifact names: absolute, or relative to the results folder (records of earlier versions
    stored paths relative to where the run started; those still resolve from that directory)."""
    path = Path(value)
    if path.is_absolute():
        return path
    inside = Path(results) / path
    return inside.resolve() if inside.exists() or not path.exists() else path.resolve()


def append_record(results_dir: str | os.PathLike[str], record: RunRecord) -> None:
    """Append one record as one complete line, under the store's file lock, and fsync it."""
    path = Path(results_dir)
    line = (record.model_dump_json() + "\n").encode("utf-8")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path / f"{RUNS_FILE}.lock"), timeout=LOCK_TIMEOUT_S):
            fd = os.open(path / RUNS_FILE, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    # A crashed writer left a partial last line; end it so our record is not glued onto it.
                    line = b"\n" + line
                _write_all(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
    except Timeout as exc:
        raise UserError(f"could not lock {path / RUNS_FILE} within {LOCK_TIMEOUT_S:.0f}s; is a run stuck?") from exc
    except OSError as exc:
        raise UserError(f"cannot append to {path / RUNS_FILE}: {exc.strerror or exc}") from exc


def _write_all(fd: int, data: bytes) -> None:
    """One ``os.write`` in practice; loop only for the rare short write (we hold the lock, so it stays one line)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_records(results_dir_or_file: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """All records in file order, plus one warning per skipped line; never raises for a damaged line.

    A missing file is an empty store: no records, no warnings.
    """
    path = runs_file(results_dir_or_file)
    if not path.exists():
        return [], []
    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                warnings.append(f"{path.name}:{lineno}: skipped, not valid JSON")
                continue
            if not isinstance(obj, dict):
                warnings.append(f"{path.name}:{lineno}: skipped, not a JSON object")
                continue
            version = obj.get("schema_version")
            if isinstance(version, int) and version > SCHEMA_VERSION:
                warnings.append(
                    f"{path.name}:{lineno}: schema_version {version} is newer than this mllmtune ({SCHEMA_VERSION})"
                )
            records.append(obj)
    return records, warnings


def _safe_name(text: str) -> str:
    """Keep names readable ('@' stays) but never let them escape their folder."""
    name = re.sub(r"[/\\\x00]", "_", text).strip()
    return "_" if name in {"", ".", ".."} else name


def predictions_path(results_dir: str | os.PathLike[str], run_id: str, benchmark_key: str) -> Path:
    """Where :func:`write_predictions` puts one benchmark's per-sample predictions."""
    return Results(results_dir).predictions(run_id, benchmark_key)


def _json_default(obj: Any) -> Any:
    """Numpy/torch scalars carry ``.item()``; anything else is kept as text rather than losing the whole file."""
    item = getattr(obj, "item", None)
    if callable(item):
        return item()
    return str(obj)


def inside(results_dir: str | os.PathLike[str], path: Path) -> Path:
    """`path`, once checked to stay inside the results folder after links are followed (a link in the folder that
    leads elsewhere would make the suite write there); one line otherwise."""
    root, real = Path(results_dir).resolve(), Path(path).resolve()
    if not real.is_relative_to(root):
        raise UserError(
            f"{path} leads out of the results folder (to {real}); replace the link with a folder, or pass that "
            "folder as --results"
        )
    return path


def write_predictions(
    results_dir: str | os.PathLike[str], run_id: str, benchmark_key: str, rows: Iterable[dict[str, Any]]
) -> Path:
    """Write per-sample predictions as JSONL atomically (temp file + ``os.replace``): complete or absent."""
    target = inside(results_dir, predictions_path(results_dir, run_id, benchmark_key))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def record_key(record: dict[str, Any]) -> tuple[Hashable, ...]:
    """Identity of an experiment cell: same recipe, same seed, same base model."""
    model = record.get("model") or {}
    return (record.get("recipe_hash"), record.get("seed"), model.get("id") if isinstance(model, dict) else None)


_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


def latest_successful(
    records: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Hashable] = record_key
) -> dict[Hashable, dict[str, Any]]:
    """The latest successful record per key (by ``created_at``, later in the file on ties).

    Lets ``bench`` skip cells already done and ``report`` show one row per cell after re-runs.
    """
    best: dict[Hashable, tuple[tuple[datetime, int], dict[str, Any]]] = {}
    for index, record in enumerate(records):
        if record.get("status") != "success":
            continue
        order = (_parse_ts(str(record.get("created_at", ""))) or _EPOCH, index)
        k = key(record)
        if k not in best or order >= best[k][0]:
            best[k] = (order, record)
    return {k: rec for k, (_, rec) in best.items()}
