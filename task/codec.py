"""Go-compatible JSON string escaping for the task wire format.

Go's ``encoding/json`` (with HTML escaping off) differs from Python's ``json.dumps`` in two
places that matter on a shared bus: control characters other than ``\\n \\r \\t`` are
written as ``\\u00XX`` (so ``\\b`` is ``\\u0008``), and U+2028/U+2029 are always escaped.
Invalid UTF-8 in a field (carried here as surrogate escapes) is written as ``\\ufffd``.
Most strings need none of this, so the common path is one regex search and a concatenation.
"""

from __future__ import annotations

import re

__all__ = ["quote"]

_NEEDS_ESCAPE = re.compile('[\x00-\x1f"\\\\\u2028\u2029\ud800-\udfff]')

_ESCAPES: dict[int, str] = {c: f"\\u{c:04x}" for c in range(0x20)}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", 0x2028: "\\u2028", 0x2029: "\\u2029"})
_ESCAPES.update({c: "\\ufffd" for c in range(0xD800, 0xE000)})


def quote(text: str) -> str:
    """``text`` as a JSON string literal, byte-for-byte as Go writes it."""
    if _NEEDS_ESCAPE.search(text) is None:
        return '"' + text + '"'
    return '"' + text.translate(_ESCAPES) + '"'
