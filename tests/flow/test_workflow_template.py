"""Templates: time placeholders plus {meta:key}; a missing key is an error naming it."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest

from task.errors import TaskError
from task.flow.template import MissingMeta, meta_keys, render

AT = datetime(2024, 1, 31, 5, 7, 9, tzinfo=UTC)


def test_time_and_meta() -> None:
    got = render("?day={yyyy}-{mm}-{dd}T{hh}&rows={meta:rows}&f={meta:file}", AT,
                 {"rows": "42", "file": "gs://b/x.gz"})
    assert got == "?day=2024-01-31T05&rows=42&f=gs://b/x.gz"


def test_meta_values_from_a_query_string_mapping() -> None:
    assert render("{meta:a}", AT, {"a": ["1", "2"]}) == "1"  # the first value, as Go's Get


def test_present_but_empty_meta_renders_empty() -> None:
    assert render("?rows={meta:rows}", AT, {"rows": ""}) == "?rows="


def test_missing_meta_names_the_key() -> None:
    with pytest.raises(MissingMeta) as info:
        render("?day={yyyy}-{mm}-{dd}&rows={meta:rows}", AT, {"file": "x"})
    assert info.value.key == "rows"
    assert "meta key 'rows' is missing in template" in str(info.value)
    assert isinstance(info.value, TaskError)
    # it survives pickling (the engine may hand it across processes or log it structured)
    again = pickle.loads(pickle.dumps(info.value))
    assert again.key == "rows" and str(again) == str(info.value)


def test_no_meta_needed_renders_with_empty_meta() -> None:
    assert render("{day_slug}/{hh}.gz", AT, {}) == "2024/01/31/05.gz"


def test_text_after_hash_is_verbatim() -> None:
    assert render("?x={meta:a}#{meta:b}", AT, {"a": "1"}) == "?x=1#{meta:b}"


def test_meta_keys() -> None:
    assert meta_keys("{meta:a}/{meta:b}?{meta:a}#{meta:c}") == ["a", "b"]
    assert meta_keys("{yyyy}") == []
