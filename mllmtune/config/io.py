"""Reading recipe and suite files: text in any Unicode encoding, safe YAML, `--set KEY=VALUE` overrides.

Every failure is one line naming the file (and the line, for YAML).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from mllmtune.errors import UserError


def apply_overrides(data: dict, overrides: list[str], where: str = "--set") -> dict:
    """Apply `a.b=c` overrides; values are parsed as YAML so `1e-4`, `true` and `[a, b]` get their types."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"{where} {item!r}: expected KEY=VALUE, e.g. stage.learning_rate=1e-4")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"{where} {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = parse_yaml(raw, f"{where} {key.strip()}")
    return data


def parse_yaml(text: str, where: str):
    """`yaml.safe_load` (no tag builds a Python object), its failures as one line naming `where`."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None and "\n" in text.strip() else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{where}{line}: not valid YAML ({problem})") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to read") from None


def read_yaml(path: Path):
    """A YAML file's content (recipe, suite): any failure to read it is one line naming the file."""
    return parse_yaml(read_text(path), str(path))


def read_text(path: Path) -> str:
    """A text file's content: UTF-8, or the encoding its byte-order mark names (UTF-8, -16, -32); else one line."""
    import codecs

    raw = path.read_bytes()
    marks = (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    )
    encoding = next((enc for bom, enc in marks if raw.startswith(bom)), "utf-8")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None
