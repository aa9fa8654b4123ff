"""Tuning strategies. Importing this package registers every strategy (torch is imported only on apply)."""

from mllmtune.strategies import additive, qlora, reparam, selective  # noqa: F401  (registers)
from mllmtune.strategies.registry import REGISTRY, Strategy, get

__all__ = ["REGISTRY", "Strategy", "get"]
