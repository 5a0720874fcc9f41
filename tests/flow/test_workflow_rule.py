"""Rule strings: every key Go's flowlord reads, parsed and checked at load."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from task.errors import ConfigError
from task.flow.rule import Rule, RuleError, parse_rule, read_meta_file

PARIS = ZoneInfo("Europe/Paris")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_empty_rule_sets_nothing() -> None:
    assert parse_rule("") == Rule(text="")
    assert not parse_rule("").is_batch


def test_leading_question_mark_and_url_decoding() -> None:
    rule = parse_rule("?cron=0+*+*+*+*&files=gs%3A%2F%2Fb%2F*.gz")
    assert rule.cron == "0 * * * *"
    assert rule.files == "gs://b/*.gz"


# cron ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("expr", ["0 * * * *", "0 0 1 * * *", "@hourly", "@daily", "1 2 */6 4 5 SUN"])
def test_cron_forms(expr: str) -> None:
    assert parse_rule(f"cron={expr}").cron == expr


def test_six_fields_put_seconds_first() -> None:
    # Given Go's README example: 6 fields, seconds first: every day at 01:00:00
    schedule = parse_rule("cron=0 0 1 * * *").schedule(at("2020-01-02T00:00:00"))
    assert schedule.next_at == at("2020-01-02T01:00:00")


def test_cron_time_zone_prefix_and_key() -> None:
    for text in ("cron=TZ=Europe/Paris 0 9 * * *", "cron=CRON_TZ=Europe/Paris 0 9 * * *",
                 "cron=0 9 * * *&timezone=Europe/Paris"):
        rule = parse_rule(text)
        assert (rule.cron, rule.timezone, rule.tz) == ("0 9 * * *", "Europe/Paris", PARIS)
        # 09:00 in Paris in January is 08:00 UTC
        assert rule.schedule(at("2024-01-10T00:00:00")).next_at == at("2024-01-10T08:00:00")


def test_cron_defaults_to_utc() -> None:
    assert parse_rule("cron=0 9 * * *").tz == ZoneInfo("UTC")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cron=0 * * *", "is not a cron expression; write 5 fields"),
        ("cron=61 * * * *", "is not a cron expression"),
        ("cron=@every 1h", "@every is not supported"),
        ("cron=", "cron= is empty"),
        ("timezone=UTC", "timezone= needs a cron="),
        ("cron=TZ=UTC 0 * * * *&timezone=Europe/Paris", "keep one"),
        ("cron=0 * * * *&timezone=Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_cron(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_rule(text)


def test_schedule_without_cron_is_an_error() -> None:
    with pytest.raises(RuleError, match="no cron"):
        parse_rule("job=x").schedule(at("2024-01-01T00:00:00"))


# offset, retry_delay, for: durations --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("-4h", timedelta(hours=-4)), ("1h30m", timedelta(minutes=90)), ("-24h", timedelta(days=-1)),
     ("90s", timedelta(seconds=90)), ("+2d", timedelta(days=2)), ("1.5h", timedelta(minutes=90)),
     ("0", timedelta(0))],
)
def test_offset_takes_go_durations(text: str, expected: timedelta) -> None:
    assert parse_rule(f"cron=@hourly&offset={text}").offset == expected


def test_retry_delay() -> None:
    assert parse_rule("retry_delay=10ms").retry_delay == timedelta(milliseconds=10)
    assert parse_rule("retry_delay=1m30s").retry_delay == timedelta(seconds=90)
    assert parse_rule("").retry_delay is None  # the engine's default


@pytest.mark.parametrize(
    ("text", "message"),
    [("offset=soon", "offset='soon' is not a duration; write e.g. -1h"),
     ("offset=", "offset='' is not a duration"),
     ("retry_delay=-5s", "retry_delay='-5s' cannot be negative"),
     ("retry_delay=3x", "retry_delay='3x' is not a duration"),
     ("for=a day", "for='a day' is not a duration")],
)
def test_bad_durations(text: str, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_rule(text)


def test_task_time_adds_the_offset_in_the_cron_zone() -> None:
    rule = parse_rule("cron=0 * * * *&offset=-4h")
    assert rule.task_time(at("2024-03-01T10:00:00")) == at("2024-03-01T06:00:00")
    paris = parse_rule("cron=TZ=Europe/Paris 0 * * * *&offset=-1h")
    got = paris.task_time(at("2024-03-01T10:00:00"))
    assert got.tzinfo == PARIS and got.hour == 10  # 10:00 UTC is 11:00 in Paris, minus 1 h


def test_batch_task_time_is_cut_to_the_hour_as_in_go() -> None:
    rule = parse_rule("cron=*/5 * * * *&for=-2h&by=hour")
    assert rule.task_time(at("2024-03-01T10:35:00")) == at("2024-03-01T10:00:00")
    assert parse_rule("cron=*/5 * * * *").task_time(at("2024-03-01T10:35:00")).minute == 35


# job, files, require, no_alert ----------------------------------------------------------------


def test_job() -> None:
    assert parse_rule("job=t2").job == "t2"
    with pytest.raises(RuleError, match="job name without ':'"):
        parse_rule("job=a:b")


@pytest.mark.parametrize(
    ("glob", "path", "matched"),
    [
        ("/folder/*/*/*.txt", "/folder/2024/01/a.txt", True),
        ("/folder/*.txt", "/folder/2024/a.txt", False),  # * stays within one part, as Go's
        ("gs://b/**/*.gz", "gs://b/2024/01/31/x.gz", True),
        ("gs://b/**/*.gz", "gs://b/x.gz", True),  # **/ also matches no folder
        ("gs://b/**", "gs://b/a/b/c", True),
        ("s3://b/?.csv", "s3://b/a.csv", True),
        ("s3://b/?.csv", "s3://b/ab.csv", False),
        ("s3://b/[ab].csv", "s3://b/b.csv", True),
        ("s3://b/[!ab].csv", "s3://b/b.csv", False),
        ("s3://b/a+b(1).csv", "s3://b/a b(1).csv", True),  # + decodes to a space, as in Go
        ("/data/*.txt", "/data/a.txt.gz", False),  # the whole path must match
    ],
)
def test_files_glob(glob: str, path: str, matched: bool) -> None:
    assert parse_rule(f"files={glob}").matches(path) is matched


def test_no_files_matches_nothing() -> None:
    assert not parse_rule("cron=@daily").matches("/anything")


def test_bad_files_glob() -> None:
    with pytest.raises(RuleError, match="never closed"):
        parse_rule("files=/data/[ab.txt")
    with pytest.raises(RuleError, match="files= is empty"):
        parse_rule("files=")


def test_require_names_meta_keys() -> None:
    rule = parse_rule("require={meta:file}&require={meta:rows},{meta:day}")
    assert rule.require == ("file", "rows", "day")
    assert parse_rule("require=file,rows").require == ("file", "rows")  # Go ignores bare names
    assert rule.missing({"file": "a", "rows": "", "x": "1"}) == ["rows", "day"]
    assert rule.missing({"file": "a", "rows": "3", "day": "2024-01-01"}) == []
    with pytest.raises(RuleError, match=r"require='\{meta:' : write|write \{meta:key\}"):
        parse_rule("require={meta:")


@pytest.mark.parametrize(("text", "flag"), [("no_alert", True), ("no_alert=true", True),
                                            ("no_alert=1", True), ("no_alert=false", False),
                                            ("", False)])
def test_no_alert(text: str, flag: bool) -> None:
    assert parse_rule(text).no_alert is flag


def test_bad_no_alert() -> None:
    with pytest.raises(RuleError, match="write no_alert=true or false"):
        parse_rule("no_alert=maybe")


# for + by: batches ----------------------------------------------------------------------------


def test_for_by_hour_covers_both_ends_walking_back() -> None:
    # Given for=-24h&by=hour from 10:00: 10:00 back to 10:00 the day before, 25 tasks (Go's Range)
    rule = parse_rule("cron=0 10 * * *&for=-24h&by=hour")
    times = rule.batch_times(at("2024-03-02T10:00:00"))
    assert len(times) == 25
    assert times[0] == at("2024-03-02T10:00:00") and times[-1] == at("2024-03-01T10:00:00")
    assert times[1] - times[0] == timedelta(hours=-1)


def test_for_defaults_to_days_and_goes_forward() -> None:
    rule = parse_rule("cron=@daily&for=48h")
    assert rule.by == "day"
    assert rule.batch_times(at("2024-03-01T00:00:00")) == [
        at("2024-03-01T00:00:00"), at("2024-03-02T00:00:00"), at("2024-03-03T00:00:00")]


def test_last_week_by_day_is_eight_tasks() -> None:
    # Go's README: for=-168h&by=day "generates 8 tasks from today to 7 days ago"
    assert len(parse_rule("cron=0 7 7 * * *&for=-168h&by=day").batch_times(at("2024-03-09T07:00:00"))) == 8


@pytest.mark.parametrize(("by", "unit"), [("hourly", "hour"), ("daily", "day"), ("week", "week"),
                                          ("weekly", "week"), ("MONTHLY", "month")])
def test_by_aliases(by: str, unit: str) -> None:
    assert parse_rule(f"cron=@daily&for=-24h&by={by}").by == unit


def test_by_week_and_month_step_the_calendar() -> None:
    weeks = parse_rule("cron=@daily&for=336h&by=week").batch_times(at("2024-03-01T00:00:00"))
    assert weeks == [at("2024-03-01T00:00:00"), at("2024-03-08T00:00:00"), at("2024-03-15T00:00:00")]
    # Jan 31 + one month is Mar 2 in a leap year, as Go's AddDate normalises it
    months = parse_rule("cron=@daily&for=1000h&by=month").batch_times(at("2024-01-31T00:00:00"))
    assert months == [at("2024-01-31T00:00:00"), at("2024-03-02T00:00:00")]
    december = parse_rule("cron=@daily&for=800h&by=month").batch_times(at("2023-12-15T00:00:00"))
    assert december == [at("2023-12-15T00:00:00"), at("2024-01-15T00:00:00")]


def test_by_day_keeps_the_wall_clock_across_dst() -> None:
    start = datetime(2024, 3, 30, 5, tzinfo=PARIS)  # DST starts on Mar 31 in Paris
    times = parse_rule("cron=@daily&for=48h&by=day").batch_times(start)
    # each step is a calendar day: Mar 30 -> 31 is 23 h, so the third 05:00 is 47 h after the
    # first and within the 48 h span
    assert [t.hour for t in times] == [5, 5, 5]
    assert times[2] == datetime(2024, 4, 1, 5, tzinfo=PARIS)
    assert times[2].astimezone(UTC) - times[0].astimezone(UTC) == timedelta(hours=47)


def test_no_for_is_one_time() -> None:
    assert parse_rule("cron=@daily").batch_times(at("2024-03-01T00:00:00")) == [at("2024-03-01T00:00:00")]


def test_bad_by() -> None:
    with pytest.raises(RuleError, match="write by=hour, day, week or month"):
        parse_rule("cron=@daily&for=-24h&by=minute")
    with pytest.raises(RuleError, match="by= needs for="):
        parse_rule("cron=@daily&by=hour")


# meta and meta-file ---------------------------------------------------------------------------


def test_meta_makes_one_row_per_position() -> None:
    rule = parse_rule("cron=@daily&meta=key:a,b|val:1,2")
    assert rule.meta == (("key", ("a", "b")), ("val", ("1", "2")))
    assert rule.meta_rows() == [{"key": "a", "val": "1"}, {"key": "b", "val": "2"}]
    assert rule.is_batch
    assert parse_rule("cron=@daily").meta_rows() == []
    assert parse_rule("meta=url:http://x/y").meta_rows() == [{"url": "http://x/y"}]


@pytest.mark.parametrize(
    ("text", "message"),
    [("meta=key:a,b|val:1", r"every key needs as many values \(key: 2, val: 1\)"),
     ("meta=key:a|key2=1", "is not key:value"),  # Go's README writes key2=1,2,3 by mistake
     ("meta=key:a|key:b", "key 'key' given twice")],
)
def test_bad_meta(text: str, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_rule(text)


def test_meta_file_and_its_go_spelling() -> None:
    assert parse_rule("cron=@daily&meta-file=data.json").meta_file == "data.json"
    assert parse_rule("cron=@daily&meta_file=data.json").meta_file == "data.json"
    assert parse_rule("meta-file=data.json").is_batch


def test_meta_with_meta_file_is_an_error() -> None:
    with pytest.raises(RuleError, match="meta= and meta-file= cannot be used together"):
        parse_rule("cron=@daily&meta=a:1&meta-file=x.json")


def test_read_meta_file(tmp_path: Path) -> None:
    path = tmp_path / "presidents.json"
    rows = [{"name": "Lincoln", "start": 1861, "share": 0.5, "alive": False, "nick": None},
            {"name": "Adams", "start": 1797, "big": 1e21}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert read_meta_file(path) == [
        {"name": "Lincoln", "start": "1861", "share": "0.5", "alive": "false", "nick": ""},
        {"name": "Adams", "start": "1797", "big": "1000000000000000000000"},
    ]


def test_bad_meta_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        read_meta_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"a": 1}\nnot json\n')
    with pytest.raises(ConfigError, match="line 2 is not JSON"):
        read_meta_file(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="line 1 is not a JSON object"):
        read_meta_file(tmp_path / "list.json")


# unknown keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("crn=@daily", "unknown rule key 'crn'; did you mean 'cron'?"),
        ("retrydelay=5s", "did you mean 'retry_delay'?"),
        ("zzz=1", "unknown rule key 'zzz'; known keys: cron, timezone"),
        ("cron=@daily&Offset=-6h", "rule key 'Offset' must be written 'offset'"),
        ("0 0 * * * *", r"'0 0 \* \* \* \*' is not a rule key; did you mean cron=0 0 \* \* \* \*\?"),
        ("require:{meta:file}", r"did you mean require=\{meta:file\}\?"),
        ("files=/a/*&count=3", "count is not supported"),
        ("cron=@daily&cron=@hourly", "rule key 'cron' is given twice"),
        ("meta-file=a&meta_file=b", "rule key 'meta-file' is given twice"),
    ],
)
def test_unknown_and_repeated_keys(text: str, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_rule(text)


def test_rule_is_a_config_error_and_hashable() -> None:
    assert issubclass(RuleError, ConfigError)
    assert hash(parse_rule("cron=@daily&meta=a:1,2&require={meta:x}")) is not None


def test_by_hour_counts_elapsed_hours_across_the_fall_back() -> None:
    # Given Paris leaves DST on Oct 27 2024 (02:00-03:00 happens twice)
    start = datetime(2024, 10, 27, 0, tzinfo=PARIS)
    times = parse_rule("cron=@daily&for=24h&by=hour").batch_times(start)
    # Then 25 distinct instants, one an hour, the 02:00 wall hour twice
    instants = [t.astimezone(UTC) for t in times]
    assert len(set(instants)) == 25
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(instants))
    assert [t.hour for t in times].count(2) == 2
