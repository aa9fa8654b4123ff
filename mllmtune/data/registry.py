"""Data sources by name: the recipe's `data.source` picks one, and its own settings model validates the section.

The file and hub sources (`mllmtune.data.sources.FileData`) are built in; a plug-in registers more (the embedded
world registers ``world``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel


@dataclass(frozen=True)
class DataSource:
    """A source of training rows. `load(spec)` returns the examples every stage reads: `prompt`, `answer`, `image`,
    `labels` for label sets, and, where the source knows the reasoning behind its labels, `reasoning` (template
    name -> the answer written in it), which GRPO's `stage.cold_start` trains on."""

    name: str
    spec: type[BaseModel]
    load: Callable[[BaseModel], list[dict]]


SOURCES: dict[str, DataSource] = {}


def register(source: DataSource) -> DataSource:
    SOURCES[source.name] = source
    return source


def get(name: str) -> DataSource | None:
    return SOURCES.get(name)
