"""Every vector the Go code produced, read and written by our Task."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from task import InvalidTaskError, Task, rfc3339
from task.meta import merge_meta

VECTORS = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "task_vectors.jsonl").read_text("utf-8").splitlines()
]

#: Decode vectors where we are stricter than Go on purpose (README "Where we are stricter").
#: Each maps to the error we raise, or to the bytes we write when we read it differently.
STRICT_ERRORS = {
    "decode_empty_object": 'needs a non-empty string "type"',
    "decode_literal_null": "got null",
    "decode_null_fields": 'needs a non-empty string "type"',
    "decode_case_insensitive_keys": 'needs a non-empty string "type"',
}
STRICT_READS = {
    # keys match exactly: only the lower-case "type" is ours, "Type"/"TYPE" are unknown keys
    "decode_case_insensitive_last_wins": b'{"type":"lower","info":""}',
    # "m\u017fg" is not "msg"
    "decode_key_unicode_folding_long_s": b'{"type":"t","info":"i"}',
}


def by_kind(kind: str) -> list[Any]:
    return [pytest.param(v, id=v["name"]) for v in VECTORS if v["kind"] == kind]


def test_vector_counts() -> None:
    kinds = [v["kind"] for v in VECTORS]
    assert (kinds.count("encode"), kinds.count("decode")) == (33, 58)
    assert (kinds.count("lifecycle"), kinds.count("meta")) == (9, 20)


def _task_from_fields(vector: dict[str, Any]) -> Task:
    fields = dict(vector["input"]["fields"])
    for name, b64 in vector["input"].get("fields_b64", {}).items():
        fields[name] = base64.b64decode(b64).decode("utf-8", "surrogateescape")
    clock = {name: _instant(c["time"]) for name, c in vector["input"].get("clock", {}).items()}
    task = Task(type="")
    if "created" in clock:
        task = Task.new(fields.get("type", "") or "t", "", id=fields.get("id", ""))
        task.created = rfc3339.format_utc(clock["created"])
    for name, value in fields.items():
        setattr(task, name, value)
    if "started" in clock:
        task.start(at=clock["started"])
    if "ended" in clock:
        task.end(fields.get("result", ""), fields.get("msg", ""), at=clock["ended"])
    return task


def _instant(text: str) -> datetime:
    moment = rfc3339.parse(text)
    assert moment is not None
    return moment


@pytest.mark.parametrize("vector", by_kind("encode"))
def test_encode(vector: dict[str, Any]) -> None:
    out = _task_from_fields(vector).to_json()
    assert out == vector["output"]["json"].encode("utf-8")
    assert len(out) == vector["output"]["len"]


@pytest.mark.parametrize("vector", by_kind("decode"))
def test_decode(vector: dict[str, Any]) -> None:
    raw = base64.b64decode(vector["input"]["json_b64"])
    name, expected = vector["name"], vector["output"]
    if name in STRICT_ERRORS:
        with pytest.raises(InvalidTaskError, match=re.escape(STRICT_ERRORS[name])):
            Task.from_json(raw)
    elif name in STRICT_READS:
        assert Task.from_json(raw).to_json() == STRICT_READS[name]
    elif expected["ok"]:
        assert Task.from_json(raw).to_json() == expected["json"].encode("utf-8")
    else:
        with pytest.raises(InvalidTaskError):
            Task.from_json(raw)


def _run_calls(vector: dict[str, Any]) -> Task:
    """Replay the Go calls of a lifecycle vector on our Task."""
    clock = vector["input"]["clock"]
    task: Task | None = None
    for call in vector["input"]["calls"]:
        call, _, pin = call.partition("@")
        at = rfc3339.parse(clock[pin]) if pin else None
        name, _, args_text = call.partition("(")
        if call.startswith("&Task{"):
            pairs = re.findall(r'(\w+):"([^"]*)"', call)
            task = Task(**{k.lower(): v for k, v in pairs})
        elif name == "NewFromBytes":
            task = Task.from_json(args_text[:-1])
        else:
            args = json.loads("[" + args_text[:-1] + "]")
            if name == "New":
                task = Task.new(*args)
            elif name == "NewWithID":
                task = Task.new(args[0], args[1], id=args[2])
            elif name == "Start":
                assert task is not None
                task.start(at=at)
            elif name == "End":
                assert task is not None
                task.end(args[0], args[1], at=at)
            else:
                raise AssertionError(f"unknown call {call}")
        if name in ("New", "NewWithID") and at is not None:
            assert task is not None
            task.created = rfc3339.format_utc(at)
    assert task is not None
    return task


@pytest.mark.parametrize("vector", by_kind("lifecycle"))
def test_lifecycle(vector: dict[str, Any]) -> None:
    task = _run_calls(vector)
    out = task.to_json().decode("utf-8")
    expected = vector["output"]
    assert list(json.loads(out)) == expected["keys"]
    if expected["deterministic"]:
        assert out == expected["json"]
        return
    pattern = re.escape(expected["json_template"])
    placeholders = {"created": "<CREATED>", "started": "<STARTED>", "ended": "<ENDED>", "id": "<UUID>"}
    for field_name, regex in expected["formats"].items():
        pattern = pattern.replace(re.escape(placeholders[field_name]), f"(?:{regex.strip('^$')})")
    assert re.fullmatch(pattern, out), out


# meta_worker_not_implementing_interface (worker_meta null: meta untouched) is a Launcher
# behaviour, pinned in tests/test_launcher.py::test_meta_untouched_when_worker_sets_none.
@pytest.mark.parametrize(
    "vector", [p for p in by_kind("meta") if p.values[0]["input"]["worker_meta"] is not None]
)
def test_meta_merge(vector: dict[str, Any]) -> None:
    assert merge_meta(vector["input"]["meta"], vector["input"]["worker_meta"]) == vector["output"]["meta"]
