"""A phase's template rendered into a task's info: time placeholders plus ``{meta:key}``.

Go's flowlord renders a missing meta key as empty text, so a child whose parent lacked
``rows`` is sent with ``rows=`` and fails later, far from the cause. Here a missing key raises
``MissingMeta`` naming it, so the engine can report the phase and the key (a key present with
an empty value renders empty, as in Go).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime

from task import timetemplate
from task.errors import TaskError

__all__ = ["MissingMeta", "meta_keys", "render"]

_META = re.compile(r"\{(?i:meta):([^{}]*)\}")


class MissingMeta(TaskError, LookupError):
    """Raised when a template's ``{meta:key}`` names a key the meta given does not have."""

    def __init__(self, key: str, template: str = "") -> None:
        self.key = key
        self.template = template
        where = f" in template {template!r}" if template else ""
        super().__init__(f"meta key {key!r} is missing{where}; the parent task's meta has no {key}=")

    def __reduce__(self) -> tuple[type[MissingMeta], tuple[str, str]]:
        return (type(self), (self.key, self.template))


def meta_keys(template: str) -> list[str]:
    """The ``{meta:key}`` keys ``template`` uses (before any ``#``), in order, once each."""
    head = template.partition("#")[0]
    return list(dict.fromkeys(m.group(1) for m in _META.finditer(head)))


def render(template: str, at: datetime, meta: Mapping[str, str | Sequence[str]]) -> str:
    """``template`` with its time placeholders from ``at`` (``task.timetemplate``) and its
    ``{meta:key}`` from ``meta``.

    Raises:
        MissingMeta: a ``{meta:key}`` whose key ``meta`` does not have.
    """
    for key in meta_keys(template):
        if key not in meta:
            raise MissingMeta(key, template)
    return timetemplate.render(template, at, meta=meta)
