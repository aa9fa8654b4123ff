"""Tiny random models of more families (see tiny_families.py for the shape every builder follows)."""

from __future__ import annotations

BUILDERS: dict = {}
