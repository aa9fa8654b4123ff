"""`mllmtune cp`: start from a shipped recipe or suite, in torchtune's `tune cp` habit."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from mllmtune.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_cp_copies_a_shipped_recipe_by_name_and_its_header_names_the_copy(tmp_path):
    dest = tmp_path / "my-lora.yaml"
    res = runner.invoke(app, ["cp", "qwen2.5-vl-3b/lora", str(dest)])
    assert res.exit_code == 0, res.output
    original = (REPO / "recipes/qwen2.5-vl-3b/lora.yaml").read_text()
    copied = dest.read_text()
    assert yaml.safe_load(copied) == yaml.safe_load(original)
    assert copied.splitlines()[0] == f"# mllmtune train --recipe {dest}"
    assert runner.invoke(app, ["validate", str(dest)]).exit_code == 0


def test_cp_takes_a_path_a_unique_short_name_or_a_suite(tmp_path):
    assert runner.invoke(app, ["cp", "recipes/world/sft-full.yaml", str(tmp_path / "a.yaml")]).exit_code == 0
    assert runner.invoke(app, ["cp", "emo-r3-released", str(tmp_path)]).exit_code == 2  # a recipe and a suite
    res = runner.invoke(app, ["cp", "qwen2.5-vl-3b/emo-r3-released", str(tmp_path)])
    assert res.exit_code == 0 and (tmp_path / "emo-r3-released.yaml").is_file()  # a folder keeps the name
    res = runner.invoke(app, ["cp", "benchmarks/quick.yaml", str(tmp_path / "suite.yaml")])
    assert res.exit_code == 0 and yaml.safe_load((tmp_path / "suite.yaml").read_text())["runs"]


def test_cp_bad_input_is_one_line_and_writes_nothing(tmp_path):
    dest = tmp_path / "x.yaml"
    res = runner.invoke(app, ["cp", "no-such-recipe", str(dest)])
    assert res.exit_code == 2 and "no-such-recipe" in res.output and "mllmtune ls recipes" in res.output
    assert not dest.exists()
    res = runner.invoke(app, ["cp", "lora", str(dest)])  # lora.yaml exists in several folders
    assert res.exit_code == 2 and "qwen2.5-vl-3b/lora" in res.output
    dest.write_text("mine")
    res = runner.invoke(app, ["cp", "qwen2.5-vl-3b/lora", str(dest)])
    assert res.exit_code == 2 and "--force" in res.output and dest.read_text() == "mine"
    assert runner.invoke(app, ["cp", "qwen2.5-vl-3b/lora", str(dest), "--force"]).exit_code == 0


def test_cp_finds_shipped_files_from_another_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["cp", "world/sft-full", "mine.yaml"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((tmp_path / "mine.yaml").read_text())["name"] == "sft-full"
