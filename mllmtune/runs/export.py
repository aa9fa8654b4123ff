"""Export a run's tuned model as a standard Hugging Face model folder.

Selective and reparameterization strategies change (or re-express) existing weights, so their export is one merged
model that loads with `from_pretrained` and needs neither peft nor mllmtune. Additive strategies add modules the
architecture does not have, so their export is the untouched base model plus the adapter beside it in `adapter/`
(a peft adapter, or the hand-written bottleneck adapter with its config), with `mllmtune_export.json` saying which.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mllmtune.errors import UserError


def find_run_model(results: Path, run_id: str) -> Path:
    """The saved model folder of a successful run in the results table."""
    from mllmtune.runs import store

    store.check_run_id(run_id)
    records, _ = store.read_records(results)
    matches = [r for r in records if r.get("run_id") == run_id]
    if not matches:
        known = [r["run_id"] for r in records if r.get("artifacts", {}).get("model")][-3:]
        hint = f"; recent runs with a model: {', '.join(known)}" if known else ""
        raise UserError(f"run {run_id!r} is not in {store.runs_file(results)}{hint}")
    record = matches[-1]
    path = record.get("artifacts", {}).get("model")
    if record.get("status") != "success":
        raise UserError(f"run {run_id!r} ({record.get('status')}) saved no tuned model; only successful runs do")
    if not path:
        raise UserError(f"run {run_id!r} saved no tuned model (a {record.get('stage')} run keeps none)")
    folder = store.artifact(results, path)
    if not folder.is_dir():
        raise UserError(f"run {run_id!r}: its model folder {folder} no longer exists")
    return folder


def merged_model(model):
    """A plain transformers model with the strategy's update folded into the weights."""
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def export_model(model_dir: str | Path, out: str | Path) -> dict:
    """Write the standard export of a saved tuned model to `out`; returns what was written."""
    from mllmtune.strategies.saving import load_base, load_tuned, read_manifest

    model_dir, out = Path(model_dir), Path(out)
    manifest = read_manifest(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {"strategy": manifest["strategy"], "family": manifest["family"], "base": manifest["base"]}
    if manifest["family"] == "additive":
        from mllmtune.models.bundle import processor_at

        load_base(manifest, dequantize=True).save_pretrained(str(out))
        processor_at(manifest["base"]["path"]).save_pretrained(str(out))
        shutil.copytree(model_dir, out / "adapter", dirs_exist_ok=True)
        info.update(layout="base model + adapter/", adapter=manifest["format"])
    else:
        # 4-bit bases are dequantized first: the adapter was trained against the dequantized weights, and merging
        # into them (not into the original full-precision weights) reproduces the trained model.
        model, processor, _ = load_tuned(model_dir, dequantize=True)
        merged = merged_model(model)
        merged.save_pretrained(str(out))
        processor.save_pretrained(str(out))
        info.update(layout="merged model", adapter=None)
    (out / "mllmtune_export.json").write_text(json.dumps(info, indent=2))
    return info


def export_run(results: Path, run_id: str, out: Path | None = None, force: bool = False) -> Path:
    model_dir = find_run_model(results, run_id)
    out = out or model_dir.parent / "export"
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"export folder {out} is not empty; pass --force to overwrite or --out to choose another")
    export_model(model_dir, out)
    return out
