"""File phases: a file's stats on the file topic start every phase whose ``files=`` glob
matches its path.

A message is Go's ``stat.Stats`` JSON (``path``, ``size``, ``created``, ``checksum``,
``linecnt``, ``bytecnt``, ``isDir``, ``files``) or a Google Cloud Storage notification
(``bucket`` + ``name``, read as ``gs://bucket/name``), as Go's flowlord reads them. The task's
time comes from the path (``2024/01/31/05``, ``2024-01-31``... as Go's ``tmpl.PathTime``),
else now; its meta is Go's: the rule's keys, ``file``, ``filename`` and ``workflow``, so the
template may use ``{meta:file}``. Its id is derived from the file and the phase, so replicas
reading the same file make the same task (and take a fire key for it).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from posixpath import basename

from task import rfc3339
from task.flow.phase_tasks import FLOW_NAMESPACE
from task.flow.template import render
from task.flow.workflow import Phase
from task.meta import encode_query, parse_query, query_unescape
from task.task import Task
from task.timetemplate import extract_time

__all__ = ["FileStats", "file_task", "parse_stats"]


@dataclass(frozen=True, slots=True)
class FileStats:
    """What the file topic says about one file (Go's ``stat.Stats``)."""

    path: str
    size: int = 0
    created: str = ""
    checksum: str = ""
    line_count: int = 0
    byte_count: int = 0
    is_dir: bool = False
    files: int = 0


def _int(value: object) -> int:
    try:
        return int(str(value)) if value is not None else 0
    except ValueError:
        return 0


def parse_stats(body: bytes) -> FileStats:
    """One file-topic message as ``FileStats``.

    Raises:
        ValueError: not a JSON object with a ``path`` (or a GCS event's ``bucket``/``name``).
    """
    try:
        doc = json.loads(body)
    except ValueError as err:
        raise ValueError(f"not JSON: {err}") from err
    if not isinstance(doc, dict):
        raise ValueError(f"a JSON {type(doc).__name__}, not an object")  # noqa: TRY004 - bad input, one error type
    if doc.get("id") and doc.get("name") and doc.get("bucket"):  # a GCS notification
        created = rfc3339.parse(str(doc.get("timeCreated", "")))
        return FileStats(
            path=f"gs://{doc['bucket']}/{doc['name']}", size=_int(doc.get("size")),
            created=rfc3339.format_utc(created) if created else "",
            checksum=str(doc.get("md5Hash", "")))
    path = doc.get("path")
    if not isinstance(path, str) or not path:
        raise ValueError("no 'path': send Go stat.Stats JSON ({\"path\": ..., \"size\": ...})")
    return FileStats(
        path=path, size=_int(doc.get("size")), created=str(doc.get("created", "")),
        checksum=str(doc.get("checksum", "")), line_count=_int(doc.get("linecnt")),
        byte_count=_int(doc.get("bytecnt")), is_dir=bool(doc.get("isDir")),
        files=_int(doc.get("files")))


def file_task(phase: Phase, stats: FileStats, now: datetime) -> Task:
    """The task ``phase`` makes for the file ``stats`` describes.

    Raises:
        MissingMeta: the template names a ``{meta:key}`` the file's meta lacks.
    """
    at = extract_time(stats.path) or now.astimezone(UTC)
    meta = parse_query(phase.rule.text.lstrip("?"))
    meta["file"] = [stats.path]
    meta["filename"] = [basename(stats.path)]
    meta["workflow"] = [phase.workflow]
    if phase.job:
        meta["job"] = [phase.job]
    info = render(phase.template, at, meta)
    key = f"file:{phase.workflow}/{phase.key}/{stats.path}/{stats.created}/{stats.size}"
    encoded = encode_query(meta)
    task = Task.new(phase.topic, info, id=str(uuid.uuid5(FLOW_NAMESPACE, key)),
                    job=phase.job or None, meta=query_unescape(encoded) or encoded)
    task.created = rfc3339.format_utc(now)
    return task
