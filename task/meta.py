"""A task's ``meta``: a URL query string, read and merged exactly as the Go launcher does.

The Go launcher parses the task's meta with ``url.ParseQuery`` (ignoring its error, so bad
pairs drop out), lets the worker's keys replace existing ones, re-encodes with keys sorted
bytewise and finally ``QueryUnescape``s the whole string. The result is raw text, which is
why merging twice is not idempotent; we copy it so Go and Python workers leave the same meta.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from urllib.parse import quote_plus, unquote_to_bytes

__all__ = ["encode_query", "merge_meta", "parse_query", "query_unescape"]

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def query_unescape(text: str) -> str | None:
    """Go's ``url.QueryUnescape``: ``+`` is a space; None when a ``%`` escape is malformed."""
    if _BAD_ESCAPE.search(text):
        return None
    if "%" not in text:
        return text.replace("+", " ")
    raw = unquote_to_bytes(text.replace("+", " "))
    return raw.decode("utf-8", "surrogateescape")


def parse_query(meta: str) -> dict[str, list[str]]:
    """Go's ``url.ParseQuery``, keeping what it keeps: pairs with ``;`` or a bad escape drop out."""
    values: dict[str, list[str]] = {}
    for pair in meta.split("&"):
        if not pair or ";" in pair:
            continue
        key, _, value = pair.partition("=")
        k = query_unescape(key)
        v = query_unescape(value)
        if k is None or v is None:
            continue
        values.setdefault(k, []).append(v)
    return values


def encode_query(values: Mapping[str, Sequence[str]]) -> str:
    """Go's ``url.Values.Encode``: keys sorted bytewise, each value query-escaped."""
    parts: list[str] = []
    for key in sorted(values, key=lambda k: k.encode("utf-8", "surrogateescape")):
        k = quote_plus(key, safe="")
        parts.extend(f"{k}={quote_plus(v, safe='')}" for v in values[key])
    return "&".join(parts)


def merge_meta(meta: str, worker_meta: Mapping[str, Sequence[str]]) -> str:
    """The done task's meta after the worker's keys are merged into ``meta`` (Go launcher rules).

    A worker key replaces every value of that key; a key set with no values is removed.
    """
    values = parse_query(meta)
    for key, new in worker_meta.items():
        if new:
            values[key] = list(new)
        else:
            values.pop(key, None)
    encoded = encode_query(values)
    unescaped = query_unescape(encoded)
    return encoded if unescaped is None else unescaped
