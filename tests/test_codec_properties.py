"""Property tests of the task codec against the rules the golden vectors show (tests/data/README.md).

The golden vectors pin single cases; here hypothesis tries many: any strings survive
``to_json``/``from_json``; keys come in Go's order with empty fields left out; escaping is
Go's (``\\u00XX`` lowercase for controls but ``\\n \\r \\t``, U+2028/U+2029 escaped, no HTML
escaping, everything else raw UTF-8); times come back exactly as written; and anything that
is not an object with a non-empty string ``type`` is an InvalidTaskError, never another error.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from task.errors import InvalidTaskError
from task.task import FIELDS, Task

#: no per-example deadline: a loaded CI machine must not turn slowness into a failure
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: any text a Python str can carry except lone surrogates (those have their own property)
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
nonempty = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20)
#: characters the escaping rules care about, so they turn up often
tricky = st.text(st.sampled_from(list("\x00\x01\x08\x0c\x1f\n\r\t\"\\/<>&\u2028\u2029\u007f\u0085é日😀\ufeff\ufffd a")),
                 max_size=30)


def _two(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: f"{n:02d}")


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    """An RFC 3339 time Go's ``time.Parse`` accepts, never the zero instant (year >= 2)."""
    year = f"{draw(st.integers(2, 9999)):04d}"
    date = f"{year}-{draw(_two(1, 12))}-{draw(_two(1, 28))}"
    clock = f"{draw(_two(0, 23))}:{draw(_two(0, 59))}:{draw(_two(0, 59))}"
    fraction = draw(st.one_of(st.just(""), st.builds(lambda sep, digits: sep + digits,
                                                     st.sampled_from(".,"),
                                                     st.text("0123456789", min_size=1, max_size=9))))
    zone = draw(st.one_of(st.just("Z"), st.builds(lambda sign, h, m: f"{sign}{h}:{m}",
                                                  st.sampled_from("+-"), _two(0, 23), _two(0, 59))))
    return f"{date}T{clock}{fraction}{zone}"


times = st.one_of(st.just(""), rfc3339())
tasks = st.builds(
    Task, type=st.one_of(nonempty, tricky.filter(bool)), info=st.one_of(text, tricky), job=text,
    created=times, id=text, meta=text, result=st.one_of(text, st.sampled_from(["complete", "error", "warn", "alert"])),
    msg=st.one_of(text, tricky), started=times, ended=times,
)


def go_quote(value: str) -> str:
    """Go's ``encoding/json`` string (1.19, HTML escaping off), written out by hand as the oracle."""
    out = ['"']
    for char in value:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char])
        elif code < 0x20 or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


@relaxed
@given(tasks)
def test_any_task_round_trips_exactly(task: Task) -> None:
    wire = task.to_json()
    again = Task.from_json(wire)
    assert again == task
    assert again.to_json() == wire


@relaxed
@given(tasks)
def test_keys_in_go_order_and_empty_fields_left_out(task: Task) -> None:
    keys = [key for key, _ in json.loads(task.to_json(), object_pairs_hook=lambda pairs: pairs)]
    expected = [name for name in FIELDS if name in ("type", "info") or getattr(task, name)]
    assert keys == expected


@relaxed
@given(tasks)
def test_bytes_are_what_go_writes(task: Task) -> None:
    parts = [f'"{name}":{go_quote(getattr(task, name))}' for name in FIELDS
             if name in ("type", "info") or getattr(task, name)]
    assert task.to_json() == ("{" + ",".join(parts) + "}").encode("utf-8")


@relaxed
@given(st.one_of(text, tricky))
def test_no_raw_control_or_line_separator_and_no_html_escaping(value: str) -> None:
    wire = Task("t", info=value).to_json().decode("utf-8")
    assert not any(ord(c) < 0x20 for c in wire)
    assert "\u2028" not in wire and "\u2029" not in wire
    for char in "<>&/":
        assert wire.count(char) == value.count(char)  # written raw, never \u003c


@relaxed
@given(rfc3339(), rfc3339(), rfc3339())
def test_times_read_from_the_wire_are_kept_verbatim(created: str, started: str, ended: str) -> None:
    wire = json.dumps({"type": "t", "created": created, "started": started, "ended": ended})
    task = Task.from_json(wire.encode())
    assert (task.created, task.started, task.ended) == (created, started, ended)
    assert f'"created":"{created}"' in task.to_json().decode()


@relaxed
@given(st.integers(0, 23), st.integers(0, 59), st.sampled_from(["", ".0", ".000", ",000000000"]))
def test_every_spelling_of_the_zero_instant_reads_as_empty(hours: int, minutes: int, fraction: str) -> None:
    # 0001-01-01T00:00:00Z seen from a non-negative offset (a negative one would be year 0)
    zone = "Z" if hours == minutes == 0 else f"+{hours:02d}:{minutes:02d}"
    stamp = f"0001-01-01T{hours:02d}:{minutes:02d}:00{fraction}{zone}"
    task = Task.from_json(json.dumps({"type": "t", "created": stamp}).encode())
    assert task.created == ""
    assert b"created" not in task.to_json()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@relaxed
@given(json_values.filter(lambda v: not isinstance(v, dict)))
def test_a_document_that_is_not_an_object_is_invalid(value: object) -> None:
    try:
        Task.from_json(json.dumps(value).encode())
    except InvalidTaskError:
        return
    raise AssertionError(f"{value!r} was read as a task")


@relaxed
@given(st.dictionaries(st.text(max_size=8).filter(lambda k: k != "type"), json_values, max_size=5),
       st.one_of(st.none(), st.just(""), st.integers(), st.lists(st.text(), max_size=2)),
       st.sampled_from(["TYPE", "Type", "tYpe", "type"]))
def test_an_object_without_a_nonempty_string_type_is_invalid(
    doc: dict[str, object], bad_type: object, spelling: str
) -> None:
    if spelling != "type":
        doc = {**doc, spelling: "fetch"}  # a case-folded key is an unknown key: no type
    else:
        doc = {**doc, "type": bad_type}
    try:
        Task.from_json(json.dumps(doc).encode())
    except InvalidTaskError:
        return
    raise AssertionError(f"{doc!r} was read as a task")


@relaxed
@given(st.dictionaries(st.text(max_size=8).filter(lambda k: k not in FIELDS), json_values, max_size=5),
       nonempty)
def test_unknown_keys_are_ignored(extra: dict[str, object], task_type: str) -> None:
    task = Task.from_json(json.dumps({**extra, "type": task_type}).encode())
    assert task == Task(task_type)


@relaxed
@given(st.binary(max_size=300))
def test_any_bytes_give_a_task_or_an_invalid_task_error(data: bytes) -> None:
    try:
        task = Task.from_json(data)
    except InvalidTaskError:
        return
    assert task.type


@relaxed
@given(st.binary(max_size=200))
def test_invalid_utf8_in_a_field_reads_as_replacement_characters(data: bytes) -> None:
    body = b'{"type":"t","info":"' + data.replace(b"\\", b"").replace(b'"', b"") + b'"}'
    try:
        task = Task.from_json(body)
    except InvalidTaskError:
        return  # a raw control character, not JSON: fine
    assert task.info == json.loads(body.decode("utf-8", "replace"))["info"]


@relaxed
@given(st.text(st.characters(categories=("Cs",)), min_size=1, max_size=5), text)
def test_a_lone_surrogate_is_written_as_an_escaped_replacement_character(bad: str, good: str) -> None:
    wire = Task("t", info=good + bad).to_json()
    assert wire.endswith(b'\\ufffd' * len(bad) + b'"}')
    assert Task.from_json(wire).info == good + "\ufffd" * len(bad)


# The fast paths (msgspec) must write and read exactly what the Go-rule paths do.
any_text = st.one_of(st.text(max_size=30), tricky)  # lone surrogates included
any_tasks = st.builds(
    Task, type=st.one_of(nonempty, tricky.filter(bool)), info=any_text, job=any_text,
    created=times, id=any_text, meta=any_text, result=any_text, msg=any_text, started=times, ended=times,
)


@relaxed
@given(any_tasks)
def test_the_fast_encoder_writes_the_bytes_go_writes(task: Task) -> None:
    assert task.to_json() == task._to_json_go()


@relaxed
@given(any_tasks)
def test_the_fast_decoder_reads_what_the_lax_decoder_reads(task: Task) -> None:
    wire = task.to_json()
    assert Task.from_json(wire) == Task._from_json_lax(wire)


def test_a_deeply_nested_document_is_an_invalid_task_not_a_recursion_error() -> None:
    # msgspec gives up on deep nesting with RecursionError: it must read as "not a task"
    for body in (b"[" * 100_000, b'{"type":"t","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
        try:
            Task.from_json(body)
        except InvalidTaskError as err:
            assert "recursion" in str(err)
        else:
            raise AssertionError("a document nested 100,000 deep was read as a task")
