"""The run store: append-only, lock-protected, tolerant of damaged lines, atomic predictions."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mllmtune.errors import UserError
from mllmtune.runs.store import (
    SCHEMA_VERSION,
    RunRecord,
    append_record,
    check_writable,
    latest_successful,
    new_run_id,
    predictions_path,
    read_records,
    write_predictions,
)


def make_record(**overrides: Any) -> RunRecord:
    fields: dict[str, Any] = {
        "run_id": new_run_id("sft-full"),
        "created_at": "2026-11-24T15:30:12+00:00",
        "status": "success",
        "recipe": {"name": "sft-full", "strategy": "full", "lr": 1e-5},
        "recipe_hash": "abc123",
        "name": "sft-full",
        "strategy": "full",
        "family": "sft",
        "stage": "specialize",
        "seed": 0,
        "model": {"id": "tiny/vlm", "revision": "main", "family": "qwen2-vl"},
        "trainable_params": 10,
        "total_params": 100,
        "wall_s": 1.5,
        "peak_mem_mb": 512.0,
        "scores": {"emo@1": {"accuracy": 0.5, "macro_f1": 0.4}},
        "baseline": {"emo@1": {"accuracy": 0.25}},
        "train": {"loss_first": 2.0, "loss_last": 1.0, "steps": 10},
        "artifacts": {"predictions": "runs/x/predictions"},
        "provenance": {"git": {"commit": None, "dirty": None}},
    }
    fields.update(overrides)
    return RunRecord(**fields)


def test_round_trip(tmp_path: Path) -> None:
    results = tmp_path / "results" / "nested"
    first, second = make_record(), make_record(status="failed", error="boom", scores={}, seed=1)
    append_record(results, first)
    append_record(results, second)
    records, warnings = read_records(results)
    assert warnings == []
    assert records == [first.model_dump(), second.model_dump()]
    assert records[0]["schema_version"] == SCHEMA_VERSION
    # A path to the file works as well as the folder.
    assert read_records(results / "runs.jsonl") == (records, [])
    assert (results / "runs.jsonl").read_bytes().count(b"\n") == 2


def test_missing_store_is_empty(tmp_path: Path) -> None:
    assert read_records(tmp_path / "nowhere") == ([], [])


def _append_many(results_dir: str, worker: int, count: int, start: Any) -> None:
    start.wait(30)
    padding = "x" * 8192  # long lines make any interleaving visible
    for seq in range(count):
        append_record(
            Path(results_dir),
            make_record(run_id=new_run_id("sft-full"), train={"w": worker, "seq": seq, "pad": padding}),
        )


def test_concurrent_appends_are_whole_lines(tmp_path: Path) -> None:
    workers, per_worker = 8, 50
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, per_worker, start)) for w in range(workers)]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0

    lines = (tmp_path / "runs.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b""
    parsed = [json.loads(line) for line in lines[:-1]]
    assert len(parsed) == workers * per_worker
    records, warnings = read_records(tmp_path)
    assert warnings == [] and len(records) == workers * per_worker
    assert len({r["run_id"] for r in records}) == workers * per_worker
    seen = {(r["train"]["w"], r["train"]["seq"]) for r in records}
    assert seen == {(w, s) for w in range(workers) for s in range(per_worker)}
    assert all(len(r["train"]["pad"]) == 8192 for r in records)


def test_damaged_lines_are_skipped_with_line_numbers(tmp_path: Path) -> None:
    good = [make_record(seed=i) for i in range(5)]
    lines = [
        good[0].model_dump_json(),  # 1
        good[1].model_dump_json(),  # 2
        "{not json",  # 3 corrupt
        good[2].model_dump_json(),  # 4
        good[3].model_dump_json()[:57],  # 5 truncated, in the middle of the file
        "",  # 6 blank, ignored silently
        "[1, 2]",  # 7 valid JSON, not a record
        good[4].model_dump_json(),  # 8
    ]
    store = tmp_path / "runs.jsonl"
    store.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe bad bytes\n" + b'{"run_id": "trunc')  # 9, 10
    records, warnings = read_records(tmp_path)
    assert [r["seed"] for r in records] == [0, 1, 2, 4]
    assert warnings == [
        "runs.jsonl:3: skipped, not valid JSON",
        "runs.jsonl:5: skipped, not valid JSON",
        "runs.jsonl:7: skipped, not a JSON object",
        "runs.jsonl:9: skipped, not valid JSON",
        "runs.jsonl:10: skipped, not valid JSON",
    ]
    # Appending after a truncated last line must not glue the new record onto it.
    append_record(tmp_path, make_record(seed=99))
    records, warnings = read_records(tmp_path)
    assert [r["seed"] for r in records] == [0, 1, 2, 4, 99]
    assert warnings[-1] == "runs.jsonl:10: skipped, not valid JSON"


def test_newer_schema_is_read_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "runs.jsonl").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "run_id": "r"}) + "\n")
    records, warnings = read_records(tmp_path)
    assert records[0]["run_id"] == "r"
    assert warnings == [f"runs.jsonl:1: schema_version {SCHEMA_VERSION + 1} is newer than this mllmtune (1)"]


def test_record_rejects_unknown_and_invalid_fields() -> None:
    with pytest.raises(ValidationError, match="bogus"):
        make_record(bogus=1)
    with pytest.raises(ValidationError):
        make_record(status="running")
    with pytest.raises(ValidationError, match="created_at"):
        make_record(created_at="yesterday")
    with pytest.raises(ValidationError, match="created_at"):
        make_record(created_at="2026-11-24T15:30:12")  # no timezone: cannot be ordered against UTC stamps
    assert make_record(created_at="2026-11-24T15:30:12Z").created_at.endswith("Z")


def _chmod_is_enforced(folder: Path) -> bool:
    """Root ignores permission bits; find out by trying rather than by asking who we are."""
    try:
        (folder / "probe").write_text("x")
    except OSError:
        return True
    (folder / "probe").unlink()
    return False


def test_read_only_folder_raises_user_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if not _chmod_is_enforced(locked):
            pytest.skip("permission bits are not enforced for this user (root?)")
        with pytest.raises(UserError, match="not writable") as info:
            check_writable(locked)
        assert str(locked) in str(info.value) and "\n" not in str(info.value)
        with pytest.raises(UserError):
            append_record(locked, make_record())
    finally:
        locked.chmod(stat.S_IRWXU)


def test_permission_denied_becomes_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same mapping as the chmod test, checkable even as root."""

    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("mllmtune.runs.store.tempfile.TemporaryFile", denied)
    with pytest.raises(
        UserError, match=f"^results folder {re.escape(str(tmp_path))} is not writable: Permission denied$"
    ):
        check_writable(tmp_path)


def test_folder_that_cannot_exist_raises_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="not writable") as info:
        check_writable(blocker / "results")
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="cannot append"):
        append_record(blocker / "results", make_record())


def test_check_writable_creates_folder_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    assert check_writable(target) == target
    assert target.is_dir() and list(target.iterdir()) == []


def test_new_run_id_is_sortable_and_safe() -> None:
    rid = new_run_id("SFT full/lr=1e-5")
    assert re.fullmatch(r"\d{8}-\d{6}-sft-full-lr-1e-5-[0-9a-f]{8}", rid)
    assert re.fullmatch(r"\d{8}-\d{6}-run-[0-9a-f]{8}", new_run_id("///"))
    assert len({new_run_id("x") for _ in range(1000)}) == 1000


class _Scalar:
    """Stands in for a numpy/torch scalar."""

    def item(self) -> float:
        return 0.25


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("cannot serialize")


def test_write_predictions(tmp_path: Path) -> None:
    rows = [{"id": 1, "pred": "héllo ✓", "score": _Scalar()}, {"id": 2, "pred": None, "path": Path("/x")}]
    path = write_predictions(tmp_path, "run-1", "org/emo@1", rows)
    assert path == tmp_path / "runs" / "run-1" / "predictions" / "org_emo@1.jsonl"
    assert path == predictions_path(tmp_path, "run-1", "org/emo@1")
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == [
        {"id": 1, "pred": "héllo ✓", "score": 0.25},
        {"id": 2, "pred": None, "path": "/x"},
    ]
    assert os.listdir(path.parent) == ["org_emo@1.jsonl"]


def test_write_predictions_is_atomic(tmp_path: Path) -> None:
    path = write_predictions(tmp_path, "run-1", "emo@1", [{"id": 1}])
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="cannot serialize"):
        write_predictions(tmp_path, "run-1", "emo@1", [{"id": 2}, {"id": 3, "bad": _Unprintable()}])
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["emo@1.jsonl"]


def test_latest_successful() -> None:
    def rec(run_id: str, created_at: str, status: str = "success", seed: int = 0) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "created_at": created_at,
            "status": status,
            "recipe_hash": "h",
            "seed": seed,
            "model": {"id": "m"},
        }

    records = [
        rec("new", "2026-11-24T12:00:00+00:00"),
        rec("old", "2026-11-24T10:00:00+00:00"),  # earlier in time though later in the file
        rec("failed", "2026-11-24T13:00:00+00:00", status="failed"),
        rec("tie-first", "2026-11-24T09:00:00+00:00", seed=1),
        rec("tie-second", "2026-11-24T09:00:00Z", seed=1),
    ]
    latest = latest_successful(records)
    assert {k: r["run_id"] for k, r in latest.items()} == {("h", 0, "m"): "new", ("h", 1, "m"): "tie-second"}
    by_seed = latest_successful(records, key=lambda r: r["seed"])
    assert by_seed[0]["run_id"] == "new" and by_seed[1]["run_id"] == "tie-second"
