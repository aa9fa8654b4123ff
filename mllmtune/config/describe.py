"""A pydantic validation error as one line naming the recipe key: the chosen strategy's or stage's own options,
the keys a section allows, the names a registry knows."""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

from pydantic import BaseModel


def describe(err: dict, data: dict, root: type[BaseModel], variants: Callable[[str], dict]) -> str:
    """`key: problem` for pydantic error `err` on recipe `data` (schema `root`); `variants(section)` gives the models
    a tagged section (strategy, stage, data) chooses among, by tag."""
    loc = [str(x) for x in err["loc"]]
    variants = variants(loc[0]) if loc else {}
    # Drop the discriminator tag pydantic inserts ("strategy.bitfit.rank" -> "strategy.rank").
    chosen = variants.get(loc[1]) if len(loc) >= 2 else None
    if chosen is not None:
        loc = [loc[0]] + loc[2:]
    key = ".".join(loc) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    kind = loc[0] if loc else ""
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
        if kind == "strategy" and chosen is not None and len(loc) == 2:
            name = data[loc[0]].get("name")
            msg = f"not an option of strategy {name!r} (its options: {', '.join(chosen.model_fields)})"
        else:
            allowed = _allowed_keys(root, loc[:-1], chosen)
            if allowed:
                msg += f" (expected one of: {', '.join(allowed)})"
    elif err["type"] == "union_tag_invalid":
        msg = (
            f"unknown {kind} {err['input'].get('name')!r}; known: {', '.join(sorted(variants))}"
            if isinstance(err.get("input"), dict)
            else msg
        )
    elif err["type"] == "union_tag_not_found":
        msg = f"missing 'name'; known {kind}s: {', '.join(sorted(variants))}"
    return f"{key}: {msg}"


def _allowed_keys(root: type[BaseModel], path: list[str], chosen: type[BaseModel] | None = None) -> list[str]:
    """Keys of the section at `path`; inside a tagged section (`chosen`), its chosen variant's."""
    model: type[BaseModel] = root
    for i, part in enumerate(path):
        if i == 0 and chosen is not None:
            model = chosen
            continue
        field = model.model_fields.get(part)
        options = get_args(field.annotation) or (field.annotation,) if field else ()
        sections = [a for a in options if isinstance(a, type) and issubclass(a, BaseModel)]  # `X | None` -> X
        if not sections:
            return []
        model = sections[0]
    return list(model.model_fields)
