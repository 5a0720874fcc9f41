"""Workflow files: what loads, and one clear line for each thing that is wrong."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from task.flow.loader import LoadResult, load_workflows
from task.flow.workflow import Phase, Workflow

DATA = Path(__file__).parent / "data"


def load(tmp_path: Path, text: str, name: str = "etl.toml") -> LoadResult:
    (tmp_path / name).write_text(text)
    return load_workflows(tmp_path / name)


def problems(tmp_path: Path, text: str) -> list[str]:
    result = load(tmp_path, text)
    assert result.workflows == {}, "a file with a problem must not load"
    return result.problems


def test_issue_example_loads() -> None:
    result = load_workflows(DATA / "etl.toml")
    assert result.problems == [] and result.warnings == []
    etl = result.workflows["etl.toml"]
    load_, report = etl.phases
    assert (load_.topic, load_.job, load_.key, load_.retry) == ("load", "hourly", "load:hourly", 3)
    assert load_.starts_on_cron and not load_.is_child and not load_.starts_on_files
    assert load_.rule.offset == timedelta(hours=-1)
    assert (report.key, report.depends_on, report.rule.require) == ("report", "load:hourly", ("rows",))
    assert report.is_child and not report.starts_on_cron
    assert etl.children("load", "hourly") == [report]
    assert etl.phase("report") is report and etl.phase("load", "hourly") is load_
    assert report.workflow == "etl.toml" and report.number == 2


def test_go_style_file_loads_like_flowlord_reads_it() -> None:
    # Given a file written as Go's flowlord documents them
    result = load_workflows(DATA / "go_style.toml")
    assert result.problems == []
    # Then the phase nothing starts loads with a warning, as Go's "non-scheduled phase"
    assert result.warnings == [
        ("go_style.toml: phase 7 (reprocess): nothing starts it (no cron, files or dependsOn); "
        "only a backload creates its tasks")
    ]
    w = result.workflows["go_style.toml"]
    by_key = {p.key: p for p in w.phases}
    assert list(by_key) == ["ingest:hourly", "transform", "load", "landing:csv", "rollup:daily",
                            "export", "reprocess"]
    # DependsOn in any case is dependsOn; the job-less dependsOn matches any job of the type
    assert w.children("transform", "") == [by_key["load"]]
    assert w.children("ingest", "hourly") == [by_key["transform"]]
    assert w.children("ingest", "other") == []
    # the job comes from the rule when the task has none (Go's Phase.Job)
    landing = by_key["landing:csv"]
    assert landing.job == "csv" and landing.starts_on_files
    assert landing.rule.matches("gs://landing/2024-01-31/orders.csv")
    assert not landing.rule.matches("gs://landing/orders.csv")
    # 6-field cron, seconds first: 03:00:00 every day; a batch of 3 days back from yesterday
    rollup = by_key["rollup:daily"]
    fired = rollup.rule.schedule(datetime(2024, 3, 9, tzinfo=UTC)).next_at
    assert fired == datetime(2024, 3, 9, 3, tzinfo=UTC)
    days = [t.date().isoformat() for t in rollup.rule.batch_times(rollup.rule.task_time(fired))]
    assert days == ["2024-03-08", "2024-03-07", "2024-03-06"]
    assert rollup.rule.no_alert
    export = by_key["export"]
    assert export.rule.meta_rows() == [{"region": "us", "bucket": "gs://us"},
                                       {"region": "eu", "bucket": "gs://eu"}]
    assert by_key["reprocess"].is_manual
    assert by_key["ingest:hourly"].rule.retry_delay == timedelta(seconds=30)


def test_phase_and_workflow_are_frozen_values() -> None:
    w = load_workflows(DATA / "etl.toml").workflows["etl.toml"]
    with pytest.raises(AttributeError):
        w.phases[0].retry = 9  # type: ignore[misc]
    assert isinstance(w, Workflow) and all(isinstance(p, Phase) for p in w.phases)
    assert len({w.phases[0], w.phases[1]}) == 2  # hashable: usable as keys


def test_phase_lookup_falls_back_to_the_type_for_a_jobless_task(tmp_path: Path) -> None:
    result = load(tmp_path, '[[phase]]\ntask = "worker:a"\nrule = "cron=@daily"\n'
                            '[[phase]]\ntask = "worker:b"\nrule = "cron=@daily"\n')
    w = result.workflows["etl.toml"]
    assert w.phase("worker", "b").key == "worker:b"  # type: ignore[union-attr]
    assert w.phase("worker").key == "worker:a"  # type: ignore[union-attr]  # Go's Cache.Get
    assert w.phase("worker", "c") is None and w.phase("other") is None


def test_dependson_with_a_job_matches_that_job_only(tmp_path: Path) -> None:
    w = load(tmp_path, '[[phase]]\ntask = "w:parent"\nrule = "cron=@daily"\n'
                       '[[phase]]\ntask = "w:other"\nrule = "cron=@daily"\n'
                       '[[phase]]\ntask = "child"\ndependsOn = "w:parent"\n'
                       '[[phase]]\ntask = "any"\ndependsOn = "w"\n').workflows["etl.toml"]
    assert [p.key for p in w.children("w", "parent")] == ["child", "any"]
    assert [p.key for p in w.children("w", "other")] == ["any"]


def test_keys_ignore_case_and_phase_tables_may_be_capitalised(tmp_path: Path) -> None:
    result = load(tmp_path, '[[Phase]]\nTask = "a"\nRule = "cron=@daily"\nRETRY = 2\n'
                            '[[Phase]]\ntask = "b"\nDEPENDSON = "a"\nTemplate = "?x"\n')
    assert result.problems == []
    a, b = result.workflows["etl.toml"].phases
    assert (a.retry, b.depends_on, b.template) == (2, "a", "?x")


# one clear line per problem ------------------------------------------------------------------


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    [line] = problems(tmp_path, '[[phase]]\ntask = "a"\nrule = "cron=@daily\n')
    assert line.startswith("etl.toml: line 3, column ")
    assert "not valid TOML" in line


def test_unknown_phase_key_with_did_you_mean(tmp_path: Path) -> None:
    lines = problems(tmp_path, '[[phase]]\ntask = "a"\nrule = "cron=@daily"\n'
                               '[[phase]]\ntask = "b"\ndepends_on = "a"\ntemplte = "x"\n')
    assert lines == [
        "etl.toml: phase 2 (b): unknown key 'depends_on'; did you mean 'dependsOn'?",
        "etl.toml: phase 2 (b): unknown key 'templte'; did you mean 'template'?",
    ]


def test_unknown_top_level_key(tmp_path: Path) -> None:
    lines = problems(tmp_path, 'name = "etl"\n[[phases]]\ntask = "a"\n')
    assert "etl.toml: unknown top-level key 'name'; known keys: phase" in lines[0]
    assert "unknown top-level key 'phases'; did you mean 'phase'?" in lines[1]


def test_both_table_spellings_is_a_problem(tmp_path: Path) -> None:
    [line] = problems(tmp_path, '[[phase]]\ntask = "a"\nrule = "cron=@daily"\n'
                                '[[Phase]]\ntask = "b"\nrule = "cron=@daily"\n')
    assert line == "etl.toml: both [[phase]] and [[Phase]]; write every table as [[phase]]"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("", "etl.toml: no [[phase]] tables; write at least one"),
        ('phase = "a"', "etl.toml: 'phase' must be [[phase]] tables, one per phase"),
        ('[[phase]]\nrule = "cron=@daily"',
         'etl.toml: phase 1: no task; write task = "type" or "type:job"'),
        ('[[phase]]\ntask = "a:b:c"\nrule = "cron=@daily"',
         "etl.toml: phase 1 (a:b:c): task 'a:b:c' must be \"type\" or \"type:job\""),
        ('[[phase]]\ntask = "a"\nrule = "cron=@daily"\nretry = "3"',
         "etl.toml: phase 1 (a): retry = '3' must be a whole number (retry = 3)"),
        ('[[phase]]\ntask = "a"\nrule = "cron=@daily"\nretry = -1',
         "etl.toml: phase 1 (a): retry = -1 cannot be negative"),
        ('[[phase]]\ntask = "a"\nrule = "cron=@daily"\nretry = true',
         "etl.toml: phase 1 (a): retry = True must be a whole number (retry = 3)"),
        ('[[phase]]\ntask = "a"\nrule = "cron=@daily"\ntemplate = 5',
         "etl.toml: phase 1 (a): template = 5 must be a string (in quotes)"),
        ('[[phase]]\ntask = "a"\nTask = "b"\nrule = "cron=@daily"',
         "etl.toml: phase 1 (a): 'task' is given twice (keys ignore case); keep one"),
        ('[[phase]]\ntask = "a:x"\nrule = "cron=@daily&job=y"',
         "etl.toml: phase 1 (a:x): task 'a:x' and rule job=y disagree; keep one"),
        ('[[phase]]\ntask = "a"\nrule = "cron=0 * * *"',
         ("etl.toml: phase 1 (a): rule: cron='0 * * *' is not a cron expression; write 5 fields "
         "(minute hour day month weekday), 6 with seconds first, or @hourly")),
        ('[[phase]]\ntask = "a"\nrule = "cron=@daily&offset=yesterday"',
         ("etl.toml: phase 1 (a): rule: offset='yesterday' is not a duration; write e.g. -1h, 30m "
         "or 1h30m")),
        ('[[phase]]\ntask = "a"\nrule = "cron=@daily&retry_delay=soon"',
         ("etl.toml: phase 1 (a): rule: retry_delay='soon' is not a duration; write e.g. 30s, 5m "
         "or 1h30m")),
        ('[[phase]]\ntask = "a"\nrule = "cron=@daily&meta=k:1&meta-file=rows.json"',
         "etl.toml: phase 1 (a): rule: meta= and meta-file= cannot be used together; keep one"),
        ('[[phase]]\ntask = "a"\nrule = "cron=@daily&retries=3"',
         ("etl.toml: phase 1 (a): rule: 'retries' is a phase key, not a rule key; write it on its "
         "own line (retry = 3)")),
    ],
)
def test_problem_lines(tmp_path: Path, text: str, line: str) -> None:
    assert problems(tmp_path, text) == [line]


def test_dependson_naming_no_phase(tmp_path: Path) -> None:
    lines = problems(tmp_path, '[[phase]]\ntask = "load:hourly"\nrule = "cron=@hourly"\n'
                               '[[phase]]\ntask = "report"\ndependsOn = "load:daily"\n'
                               '[[phase]]\ntask = "mail"\ndependsOn = "nothing"\n')
    assert lines == [
        ("etl.toml: phase 2 (report): dependsOn 'load:daily' names no phase; did you mean "
        "'load:hourly'?"),
        "etl.toml: phase 3 (mail): dependsOn 'nothing' names no phase",
    ]


def test_cycles(tmp_path: Path) -> None:
    lines = problems(tmp_path, '[[phase]]\ntask = "a"\nrule = "cron=@daily"\ndependsOn = "c"\n'
                               '[[phase]]\ntask = "b"\ndependsOn = "a"\n'
                               '[[phase]]\ntask = "c"\ndependsOn = "b"\n'
                               '[[phase]]\ntask = "self"\ndependsOn = "self"\n')
    assert lines == [
        "etl.toml: dependsOn cycle a -> b -> c -> a; a phase cannot wait for itself, break the loop",
        "etl.toml: dependsOn cycle self -> self; a phase cannot wait for itself, break the loop",
    ]


def test_a_jobless_dependson_on_its_own_type_is_a_loop(tmp_path: Path) -> None:
    # Given w:b follows "w" (any job of w): Go would start w:b again each time w:b completes
    lines = problems(tmp_path, '[[phase]]\ntask = "w:a"\nrule = "cron=@daily"\n'
                               '[[phase]]\ntask = "w:b"\ndependsOn = "w"\n')
    assert lines == [
        ("etl.toml: dependsOn cycle w:b -> w:b; dependsOn 'w' without a job follows every job "
        'of w, this one too; name the parent\'s job (dependsOn = "w:...")')
    ]


def test_duplicate_phases(tmp_path: Path) -> None:
    lines = problems(tmp_path, '[[phase]]\ntask = "a:x"\nrule = "cron=@daily"\n'
                               '[[phase]]\ntask = "a"\nrule = "job=x&cron=@hourly"\n')
    assert lines == [('etl.toml: phase 2 (a): same task as phase 1 (a:x); give one another job '
                     '(task = "a:other")')]


def test_every_problem_is_listed_not_just_the_first(tmp_path: Path) -> None:
    lines = problems(tmp_path, '[[phase]]\ntask = "a"\nrule = "crn=x"\n'
                               '[[phase]]\ntask = "b"\nretry = "x"\n'
                               '[[phase]]\ntask = "c"\ndependsOn = "zz"\n')
    assert [line.split(":")[1].strip() for line in lines] == ["phase 1 (a)", "phase 2 (b)",
                                                              "phase 3 (c)"]


# warnings: the file loads --------------------------------------------------------------------


def test_warnings(tmp_path: Path) -> None:
    result = load(tmp_path, '[[phase]]\ntask = "manual"\ntemplate = "?d={yyy}"\n'
                            '[[phase]]\ntask = "tick"\nrule = "cron=@daily"\ntemplate = "{meta:x}"\n'
                            '[[phase]]\ntask = "f"\nrule = "files=/a/*&offset=-1h&for=-2h"\n'
                            '[[phase]]\ntask = "r"\nrule = "cron=@daily&require={meta:y}"\n'
                            '[[phase]]\ntask = "ok"\nrule = "files=/b/*"\ntemplate = "{meta:file}"\n')
    assert list(result.workflows) == ["etl.toml"]
    assert result.problems == []
    assert result.warnings == [
        ("etl.toml: phase 1 (manual): nothing starts it (no cron, files or dependsOn); only a "
        "backload creates its tasks"),
        "etl.toml: phase 1 (manual): template placeholder {yyy} is unknown and stays as written",
        ("etl.toml: phase 2 (tick): template uses {meta:x} but nothing gives this phase that "
        "meta; its tasks cannot be made"),
        "etl.toml: phase 3 (f): for= is ignored: only a cron phase makes batches",
        "etl.toml: phase 3 (f): offset= is ignored: only a cron phase's time is shifted",
        "etl.toml: phase 4 (r): require= is ignored: only a dependsOn phase has a parent",
    ]


def test_a_missing_meta_file_is_a_warning(tmp_path: Path) -> None:
    rows = tmp_path / "rows.json"
    text = (f'[[phase]]\ntask = "a"\nrule = "cron=@daily&meta-file={rows}"\n'
            'template = "?n={meta:name}"\n')
    result = load(tmp_path, text)
    assert list(result.workflows) == ["etl.toml"]
    assert result.warnings == [
        (f"etl.toml: phase 1 (a): meta-file {rows} is not there (a relative path is read from "
        "flow's working directory); its batches will fail")
    ]
    rows.write_text('{"name": "x"}\n')
    assert load(tmp_path, text).warnings == []


def test_go_readme_examples(tmp_path: Path) -> None:
    # Given the phases Go's flowlord README documents (its missing quotes fixed)
    result = load(tmp_path, '''
[[Phase]]
task = "topic_name"
dependsOn = ""
rule = "cron=0 * * * *&offset=-4h&job=t2"
retry = 3
template = "?date={yyyy}-{mm}-{dd}"

[[Phase]]
task = "task1"
dependsOn = "topic_name"
rule = "retry_delay=30s"
retry = 3
template = "?hour={yyyy}-{mm}-{dd}T{hh}"

[[Phase]]
task="worker:job-meta"
rule="cron=0 1 2 * * *&meta=name:a,b,c|value:1,2,3"
template="?name={meta:name}&value={meta:value}&day={yyyy}-{mm}-{dd}"

[[Phase]]
task="worker:lastweek"
rule="cron=0 7 7 * * *&for=-168h&by=day"
template="?day={yyyy}-{mm}-{dd}"
''')
    assert result.problems == [] and result.warnings == []
    topic, child, meta, week = result.workflows["etl.toml"].phases
    assert (topic.key, topic.rule.offset, child.depends_on) == ("topic_name:t2", timedelta(hours=-4),
                                                                "topic_name")
    # "generates 3 tasks with the info of ?name=a&value=1 AND ?name=b&value=2 AND ..."
    assert [r["name"] + r["value"] for r in meta.rule.meta_rows()] == ["a1", "b2", "c3"]
    # "generates 8 tasks from today to 7 days ago"
    fired = week.rule.schedule(datetime(2024, 3, 9, tzinfo=UTC)).next_at
    assert len(week.rule.batch_times(week.rule.task_time(fired))) == 8
    # And the README's "Offset=-6h" (ignored by Go, which reads keys case-sensitively) is caught
    lines = problems(tmp_path, '[[Phase]]\ntask = "topic"\nrule = "cron=0 0 1 * * *&Offset=-6h"\n')
    assert lines == ["etl.toml: phase 1 (topic): rule: rule key 'Offset' must be written 'offset'"]
