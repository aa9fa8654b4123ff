"""Shared fixtures: every test runs against a private cache and the seconds-sized micro world."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("mllmtune-home")
    old = {k: os.environ.get(k) for k in ("MLLMTUNE_HOME", "MLLMTUNE_WORLD_SIZE")}
    os.environ["MLLMTUNE_HOME"] = str(home)
    os.environ["MLLMTUNE_WORLD_SIZE"] = "micro"
    yield home
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def micro_world(_private_home):
    """The micro world, built once per test session (data, tokenizer, tiny model, a few pretraining steps)."""
    from mllmtune.runtime import quiet_libraries
    from mllmtune.world.build import ensure_world

    quiet_libraries()
    return ensure_world("micro", log=lambda *a: None)


@pytest.fixture()
def bundle(micro_world):
    from mllmtune.models.bundle import load_bundle

    return load_bundle("world")
