"""Time templates: rendering, offsets, user-typed times and extraction back out of paths."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from task.timetemplate import (
    extract_time,
    parse_offset,
    parse_time,
    render,
    shift,
    unknown_placeholders,
)

AT = datetime(2024, 1, 31, 5, 7, 9, tzinfo=UTC)
NY = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{yyyy}-{mm}-{dd}T{hh}:{min}", "2024-01-31T05:07"),
        ("{YYYY}-{MM}-{DD}T{HH}", "2024-01-31T05"),
        ("{Yyyy}/{yy}/{YY}", "2024/24/24"),
        ("{ts}|{TS}", "20240131T050709|20240131T050709"),
        ("base/{SLUG}/x", "base/2024/01/31/05/x"),
        ("{slug}={hour_slug}={HOUR_SLUG}", "2024/01/31/05=2024/01/31/05=2024/01/31/05"),
        ("{day_slug} {DAY_SLUG}", "2024/01/31 2024/01/31"),
        ("{month_slug} {Month_Slug}", "2024/01 2024/01"),
        ("no placeholders", "no placeholders"),
        ("", ""),
    ],
)
def test_render_time_placeholders(template: str, expected: str) -> None:
    assert render(template, AT) == expected


def test_mm_is_the_month_and_min_the_minutes() -> None:
    assert render("{mm}:{min}", datetime(2024, 11, 2, 3, 45, tzinfo=UTC)) == "11:45"


def test_text_after_hash_is_verbatim() -> None:
    assert render("s3://b/{yyyy}/#{yyyy} {slug} {meta:x}", AT, meta={"x": "1"}) == (
        "s3://b/2024/#{yyyy} {slug} {meta:x}"
    )
    assert render("#{hh}", AT) == "#{hh}"


def test_unknown_braces_stay_and_are_reported() -> None:
    template = '{"a": 1} {yyy} {hh} {meta:k}'
    assert render(template, AT) == '{"a": 1} {yyy} 05 {meta:k}'
    assert unknown_placeholders(template) == ["{yyy}"]
    assert unknown_placeholders("{YYYY}/{Slug}/{pod}#{nope}") == []


def test_renders_in_the_zone_of_the_time() -> None:
    # Given 05:07 UTC, which is 00:07 in New York (EST, -5h)
    local = AT.astimezone(NY)
    assert render("{dd}T{hh}:{min}", local) == "31T00:07"
    assert render("{dd}T{hh}", AT) == "31T05"


def test_host_and_pod() -> None:
    assert render("{host}|{pod}|{HOST}|{POD}", AT, host="web-7d9f-x2k4q") == (
        "web-7d9f-x2k4q|7d9f-x2k4q|web-7d9f-x2k4q|7d9f-x2k4q"
    )
    assert render("{pod}", AT, host="plain") == "plain"
    assert render("{host}", AT) != "{host}"


def test_uuid_is_eight_hex_characters_once_per_rendering() -> None:
    first = render("{uuid}/{UUID}", AT)
    a, b = first.split("/")
    assert re.fullmatch(r"[0-9a-f]{8}", a) and a == b
    assert len({render("{uuid}", AT) for _ in range(20)}) > 1


def test_meta_placeholders() -> None:
    meta = {"region": "eu", "ids": ["7", "8"]}
    assert render("{meta:region}/{meta:ids}/{meta:none}", AT, meta=meta) == "eu/7/"
    assert render("{META:region}", AT, meta=meta) == "eu"
    assert render("{meta:region}/{hh}", AT) == "{meta:region}/05"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-1h", timedelta(hours=-1)),
        ("+2d", timedelta(days=2)),
        ("2d", timedelta(days=2)),
        ("90m", timedelta(minutes=90)),
        ("90min", timedelta(minutes=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("-1w", timedelta(weeks=-1)),
        ("30s", timedelta(seconds=30)),
        ("1.5h", timedelta(hours=1.5)),
        ("", timedelta(0)),
        (" -1H ", timedelta(hours=-1)),
    ],
)
def test_parse_offset(text: str, expected: timedelta) -> None:
    assert parse_offset(text) == expected


@pytest.mark.parametrize("text", ["1", "h", "-", "1y", "1h-2m", "abc", "1h 2x"])
def test_parse_offset_rejects_with_the_accepted_form(text: str) -> None:
    with pytest.raises(ValueError, match="write e.g. -1h"):
        parse_offset(text)


def test_shift_by_hours_is_elapsed_time() -> None:
    assert shift(AT, "-1h") == datetime(2024, 1, 31, 4, 7, 9, tzinfo=UTC)
    # Given 03:30 EDT on the day clocks fall back (01:00-02:00 happens twice)
    at = datetime(2024, 11, 3, 3, 30, tzinfo=NY)
    # When we go back 3 hours of elapsed time
    back = shift(at, "-3h")
    # Then we are at the first 01:30 (EDT), 3 real hours earlier
    assert back.astimezone(UTC) == at.astimezone(UTC) - timedelta(hours=3)
    assert (back.hour, back.minute, back.utcoffset()) == (1, 30, timedelta(hours=-4))


def test_shift_by_days_keeps_the_wall_clock_across_dst() -> None:
    # Given 05:00 EDT on the day New York springs forward (at 02:00)
    at = datetime(2024, 3, 10, 5, 0, tzinfo=NY)
    # When shifted back one and two days
    one, two = shift(at, "-1d"), shift(at, timedelta(days=-2))
    # Then the wall time stays 05:00 (EST now), and the first step is only 23 real hours
    assert (one.day, one.hour, two.day, two.hour) == (9, 5, 8, 5)
    assert at.astimezone(UTC) - one.astimezone(UTC) == timedelta(hours=23)
    assert one.utcoffset() == two.utcoffset() == timedelta(hours=-5)
    assert shift(one, "+1d") == at and shift(one, "+1d").utcoffset() == timedelta(hours=-4)


def test_shift_into_a_dst_gap_lands_after_it() -> None:
    at = datetime(2024, 3, 9, 2, 30, tzinfo=NY)
    moved = shift(at, "+1d")  # 2024-03-10 02:30 does not exist in New York
    assert (moved.day, moved.hour, moved.minute) == (10, 3, 30)
    assert moved.astimezone(NY) == moved


def test_shift_naive_and_zero() -> None:
    naive = datetime(2024, 1, 1)
    assert shift(naive, "+1d") == datetime(2024, 1, 2)
    assert shift(AT, "") is AT


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-31", datetime(2024, 1, 31, tzinfo=UTC)),
        ("2024-01-31T05", datetime(2024, 1, 31, 5, tzinfo=UTC)),
        ("2024-01-31T05:30", datetime(2024, 1, 31, 5, 30, tzinfo=UTC)),
        ("2024-01-31 05:30:09", datetime(2024, 1, 31, 5, 30, 9, tzinfo=UTC)),
        ("2024-01-31T05:30:00Z", datetime(2024, 1, 31, 5, 30, tzinfo=UTC)),
        ("2024-01-31T05:30:00+02:00", datetime(2024, 1, 31, 3, 30, tzinfo=UTC)),
        ("2024-01-31T05-0130", datetime(2024, 1, 31, 6, 30, tzinfo=UTC)),
        ("now", AT),
        ("today", datetime(2024, 1, 31, tzinfo=UTC)),
        ("-3d", AT - timedelta(days=3)),
    ],
)
def test_parse_time(text: str, expected: datetime) -> None:
    assert parse_time(text, now=AT) == expected


def test_parse_time_reads_wall_time_in_the_zone() -> None:
    t = parse_time("2024-07-04T12", NY)
    assert t.tzinfo is NY and t.astimezone(UTC).hour == 16
    assert parse_time("2024-07-04T12:00:00Z", NY).hour == 8
    assert parse_time("today", NY, now=AT) == datetime(2024, 1, 31, tzinfo=NY)


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01", "2024-02-30", "31/01/2024", ""])
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="time"):
        parse_time(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s3://bucket/logs/2024/01/31/05/file.json.gz", datetime(2024, 1, 31, 5)),
        ("/data/2024/01/31/file.txt", datetime(2024, 1, 31)),
        ("/data/2024-01-31.txt", datetime(2024, 1, 31)),
        ("/data/2024/01/file.txt", datetime(2024, 1, 1)),
        ("/data/2023/12/31/23/records-20240131T050709.json", datetime(2024, 1, 31, 5, 7, 9)),
        ("day=2024-01-31", datetime(2024, 1, 31)),
        ("s3://b/2020/01/01/00/x?date=2024-01-31", datetime(2024, 1, 31)),
        ("?hour=2024-01-31T05&x=1", datetime(2024, 1, 31, 5)),
        ("hour_utc=2024-01-31T05", datetime(2024, 1, 31, 5)),
        ("s3://b/f?time=2024-01-31T05:06:07Z", datetime(2024, 1, 31, 5, 6, 7)),
        ("timestamp:2024-01-31T05:06:07Z", datetime(2024, 1, 31, 5, 6, 7)),
        ("/a/2024/13/40/2024/01/31/x", datetime(2024, 1, 31)),
        ("/a/b/x?day=2024/01/31", None),
        ("no time here", None),
        ("/a/12024/01/31", None),
    ],
)
def test_extract_time(text: str, expected: datetime | None) -> None:
    got = extract_time(text)
    assert got == (expected.replace(tzinfo=UTC) if expected else None)


def test_extract_time_in_a_zone_and_round_trip() -> None:
    got = extract_time("logs/2024/07/04/12/x", NY)
    assert got == datetime(2024, 7, 4, 12, tzinfo=NY) and got.tzinfo is NY
    # A stamp with Z is an instant, shown in the zone asked for
    assert extract_time("time=2024-07-04T16:00:00Z", NY) == datetime(2024, 7, 4, 12, tzinfo=NY)
    # What render writes, extract_time reads back
    for template in ("x/{slug}/y", "x/{day_slug}", "f-{ts}.gz", "q?day={yyyy}-{mm}-{dd}"):
        back = extract_time(render(template, AT))
        assert back is not None and back <= AT and AT - back < timedelta(days=1)
