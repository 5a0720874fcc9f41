"""Tiny HTML helpers for taskbus's server-rendered pages: everything is escaped by default.

No template engine: a page is a few tables and lists, and one rule keeps it safe. Text
is ``str`` and is always escaped; markup is ``Markup`` (a ``str`` built only by these
helpers, or by ``Markup(...)`` on a constant) and is kept as it is. Task ids, messages and
topic names come from the bus, so anything that reaches a page goes through ``esc``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources

__all__ = ["STYLESHEET_PATH", "Markup", "document", "esc", "join", "kv_table", "stylesheet", "table", "tag"]

#: where the status server (and the workflow console) serve ``style.css``
STYLESHEET_PATH = "/style.css"


class Markup(str):
    """HTML that is safe as it is: built by these helpers, never from outside text."""

    __slots__ = ()


def esc(value: object) -> Markup:
    """``value`` as HTML text: escaped unless it is already ``Markup``; None is empty."""
    if isinstance(value, Markup):
        return value
    return Markup("" if value is None else html.escape(str(value), quote=True))


def join(parts: Iterable[object]) -> Markup:
    """The parts one after the other, each escaped unless it is ``Markup``."""
    return Markup("".join(esc(part) for part in parts))


def tag(name: str, /, *children: object, **attrs: object) -> Markup:
    """``<name attrs>children</name>``; attribute values and text children are escaped.

    ``class_`` is written ``class``; an attribute whose value is None or False is left out,
    one whose value is True is written bare.
    """
    written = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        attr = key.rstrip("_").replace("_", "-")
        written.append(f" {attr}" if value is True else f' {attr}="{esc(value)}"')
    return Markup(f"<{name}{''.join(written)}>{join(children)}</{name}>")


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    empty: str,
    numeric: Iterable[int] = (),
    id: str | None = None,
) -> Markup:
    """A table with ``headers``; ``empty`` is shown instead when there are no rows. Columns
    whose index is in ``numeric`` are right-aligned."""
    right = set(numeric)
    body = [
        tag("tr", *(tag("td", cell, class_="num" if i in right else None) for i, cell in enumerate(row)))
        for row in rows
    ]
    if not body:
        return tag("p", empty, class_="empty", id=id)
    head = tag("tr", *(tag("th", h, class_="num" if i in right else None) for i, h in enumerate(headers)))
    return tag("table", tag("thead", head), tag("tbody", *body), id=id)


def kv_table(pairs: Mapping[str, object] | Iterable[tuple[str, object]], *, id: str | None = None) -> Markup:
    """A two-column table of names and values."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    rows = [tag("tr", tag("th", key, scope="row"), tag("td", value)) for key, value in items]
    return tag("table", tag("tbody", *rows), class_="kv", id=id)


def document(title: str, body: Markup, *, refresh: int | None = None) -> bytes:
    """A whole page: ``title``, the shared stylesheet, ``body``; reloads itself every
    ``refresh`` seconds when given (no JavaScript needed)."""
    meta = Markup(f'<meta http-equiv="refresh" content="{int(refresh)}">') if refresh else Markup("")
    page = (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">{meta}'
        f"<title>{esc(title)}</title>"
        f'<link rel="stylesheet" href="{STYLESHEET_PATH}"></head>'
        f"<body>{body}</body></html>\n"
    )
    return page.encode("utf-8")


def stylesheet() -> bytes:
    """The shared stylesheet, ``task/web/style.css`` as shipped in the package."""
    return resources.files("task.web").joinpath("style.css").read_bytes()
