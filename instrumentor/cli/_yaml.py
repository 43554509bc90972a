"""A small block-style YAML emitter for plain data: ``plan export --format yaml`` needs no PyYAML.

It writes dicts, lists, strings, ints, bools and ``None`` — the shape of the plan document — and
nothing else. Every string is double-quoted with JSON-style escapes (a double-quoted YAML scalar
is a superset of a JSON string), so no value can be misread as a number, a boolean, ``null``, a
comment or a mapping, whatever it contains. Characters YAML does not allow raw in a document, or
reads as line breaks (``U+0085``, ``U+2028``, ``U+2029``), are escaped too. Keys that are plain
lowercase identifiers are written bare, for readability.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["dump_yaml"]

_BARE_KEY = re.compile(r"[a-z_][a-z0-9_]*\Z")
#: Words YAML 1.1 (PyYAML) or 1.2 reads as booleans or null when unquoted.
_RESERVED = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _must_escape(code: int) -> bool:
    """Whether YAML forbids the character raw, or reads it as a line break or a BOM."""
    return (
        code < 0x20
        or 0x7F <= code <= 0x9F
        or code in (0x2028, 0x2029, 0xFEFF, 0xFFFE, 0xFFFF)
        or 0xD800 <= code <= 0xDFFF
    )


def _quote(text: str) -> str:
    out = ['"']
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif _must_escape(ord(char)):
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"YAML export supports string keys only, got {key!r}")
    if _BARE_KEY.match(key) and key not in _RESERVED:
        return key
    return _quote(key)


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, dict):
        return "{}"  # only reached when empty
    if isinstance(value, list):
        return "[]"
    raise TypeError(
        f"YAML export supports dict, list, str, int, bool and None, got {type(value).__name__}"
    )


def _is_block(value: object) -> bool:
    return isinstance(value, (dict, list)) and len(value) > 0


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if _is_block(item):
                lines.append(f"{pad}{_key(key)}:")
                lines.extend(_lines(item, indent + 2))
            else:
                lines.append(f"{pad}{_key(key)}: {_scalar(item)}")
    else:
        for item in value:
            if _is_block(item):
                nested = _lines(item, indent + 2)
                # The first line of the nested block goes on the dash line: "- name: ..."
                lines.append(f"{pad}- {nested[0][indent + 2 :]}")
                lines.extend(nested[1:])
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return lines


def dump_yaml(data: Any) -> str:
    """``data`` as a block-style YAML document that ``yaml.safe_load`` reads back equal.

    Raises:
        TypeError: If ``data`` holds anything but dicts with string keys, lists, strings, ints,
            bools and ``None``.
    """
    if not _is_block(data):
        return _scalar(data) + "\n"
    return "\n".join(_lines(data, 0)) + "\n"
