"""WorkflowSet: a directory of workflow files, lookups across them, reloads that never let a
bad file replace a good one."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from task.flow.loader import WorkflowSet, load_workflows

DATA = Path(__file__).parent / "data"
GOOD = '[[phase]]\ntask = "a"\nrule = "cron=@daily"\n[[phase]]\ntask = "b"\ndependsOn = "a"\n'
BETTER = GOOD + '[[phase]]\ntask = "c"\ndependsOn = "b"\n'
BAD = '[[phase]]\ntask = "a"\nrule = "cron=@daily"\n[[phase]]\ntask = "b"\ndependsOn = "zz"\n'


def write(path: Path, text: str) -> None:
    """Write ``text`` and move the mtime on by a second, so a change is seen even where the
    file system's clock is coarse."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    later = max(path.stat().st_mtime_ns, before + 1_000_000_000)
    os.utime(path, ns=(later, later))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A workflow directory: two files at the top, one in a sub-folder, and files to skip."""
    root = tmp_path / "workflows"
    root.mkdir()
    shutil.copy(DATA / "etl.toml", root / "etl.toml")
    shutil.copy(DATA / "go_style.toml", root / "go_style.toml")
    write(root / "team" / "daily.toml",
          '[[phase]]\ntask = "load:hourly"\nrule = "cron=@daily"\ntemplate = "?day={yyyy}-{mm}-{dd}"\n'
          '[[phase]]\ntask = "mail"\ndependsOn = "load"\n')
    write(root / "README.md", "not a workflow")
    write(root / ".#etl.toml", "editor lock file, not TOML")
    write(root / ".git" / "x.toml", "hidden folder")
    return root


def test_a_directory_of_workflow_files(tree: Path) -> None:
    workflows = WorkflowSet.open(tree)
    assert workflows.problems == []
    assert list(workflows.workflows()) == ["etl.toml", "go_style.toml", "team/daily.toml"]
    daily = workflows.workflow("team/daily.toml")
    assert daily is not None and daily.path == tree / "team" / "daily.toml"
    assert [p.workflow for p in daily.phases] == ["team/daily.toml"] * 2


def test_lookups_across_workflows(tree: Path) -> None:
    workflows = WorkflowSet.open(tree)
    # the same type:job in two workflows: the task's workflow= meta picks one
    assert workflows.phase("load", "hourly").workflow == "etl.toml"  # type: ignore[union-attr]
    in_team = workflows.phase("load", "hourly", workflow="team/daily.toml")
    assert in_team is not None and in_team.workflow == "team/daily.toml"
    assert workflows.phase("load", "hourly", workflow="nope.toml") is None
    assert workflows.phase("nothing") is None
    # children: Go looks in the task's own workflow; without one, in all
    assert [p.key for p in workflows.children("load", "hourly", workflow="etl.toml")] == ["report"]
    assert [p.key for p in workflows.children("load", "hourly")] == ["report", "mail"]
    assert [(p.workflow, p.key) for p in workflows.cron_phases()] == [
        ("etl.toml", "load:hourly"), ("go_style.toml", "ingest:hourly"),
        ("go_style.toml", "rollup:daily"), ("go_style.toml", "export"),
        ("team/daily.toml", "load:hourly")]
    assert [p.key for p in workflows.file_phases()] == ["landing:csv"]
    assert len(workflows.phases()) == 2 + 7 + 2


def test_load_workflows_of_one_file_names_it_by_its_file_name(tree: Path) -> None:
    result = load_workflows(tree / "team" / "daily.toml")
    assert list(result.workflows) == ["daily.toml"]


def test_a_bad_file_never_replaces_a_good_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "etl.toml"
    write(path, GOOD)
    workflows = WorkflowSet.open(tmp_path)
    good = workflows.workflow("etl.toml")
    assert good is not None and workflows.loaded_at("etl.toml") is not None
    # When the file is saved with a dependsOn naming no phase
    write(path, BAD)
    assert workflows.changed()
    with caplog.at_level(logging.ERROR, logger="task.flow.loader"):
        assert workflows.reload() == []
    # Then the good version stays in use and the problem is readable (for /info) and logged
    assert workflows.workflow("etl.toml") is good
    assert workflows.children("a") == [good.phases[1]]
    loaded = workflows.loaded_at("etl.toml").strftime("%Y-%m-%d %H:%M:%S UTC")  # type: ignore[union-attr]
    assert workflows.problems == [
        "etl.toml: phase 2 (b): dependsOn 'zz' names no phase",
        f"etl.toml: not reloaded; the version loaded at {loaded} stays in use",
    ]
    assert "dependsOn 'zz' names no phase" in caplog.text
    assert not workflows.changed()
    # When it is reloaded again unchanged, nothing is parsed or logged again
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="task.flow.loader"):
        assert workflows.reload() == []
    assert caplog.text == ""
    assert len(workflows.problems) == 2
    # When the file is fixed, the new version replaces the old and the problems go
    write(path, BETTER)
    assert workflows.reload() == ["etl.toml"]
    assert [p.key for p in workflows.workflow("etl.toml").phases] == ["a", "b", "c"]  # type: ignore[union-attr]
    assert workflows.problems == []


def test_a_bad_file_at_start_is_left_out_and_others_load(tmp_path: Path) -> None:
    write(tmp_path / "good.toml", GOOD)
    write(tmp_path / "bad.toml", BAD)
    result = load_workflows(tmp_path)
    assert list(result.workflows) == ["good.toml"]
    assert result.problems == ["bad.toml: phase 2 (b): dependsOn 'zz' names no phase"]


def test_changed_sees_edits_new_and_removed_files(tmp_path: Path) -> None:
    write(tmp_path / "one.toml", GOOD)
    workflows = WorkflowSet.open(tmp_path)
    assert not workflows.changed()
    # touched (saved unchanged): seen by its mtime, but nothing to replace
    write(tmp_path / "one.toml", GOOD)
    assert workflows.changed()
    assert workflows.reload() == []
    assert not workflows.changed()
    # a new file
    write(tmp_path / "sub" / "two.toml", GOOD)
    assert workflows.changed()
    assert workflows.reload() == ["sub/two.toml"]
    # a removed file: its workflow goes, as in Go
    (tmp_path / "one.toml").unlink()
    assert workflows.changed()
    assert workflows.reload() == ["one.toml"]
    assert list(workflows.workflows()) == ["sub/two.toml"]
    assert not workflows.changed()


def test_removing_a_bad_file_clears_its_problems(tmp_path: Path) -> None:
    write(tmp_path / "bad.toml", BAD)
    workflows = WorkflowSet.open(tmp_path)
    assert workflows.problems
    (tmp_path / "bad.toml").unlink()
    workflows.reload()
    assert workflows.problems == [
        f"{tmp_path}: no workflow files (*.toml) here; write one, see docs/flow-workflows.md"]


def test_a_vanished_path_keeps_the_workflows(tmp_path: Path) -> None:
    root = tmp_path / "wf"
    write(root / "etl.toml", GOOD)
    workflows = WorkflowSet.open(root)
    shutil.rmtree(root)
    assert workflows.changed()
    assert workflows.reload() == []
    assert list(workflows.workflows()) == ["etl.toml"]
    assert workflows.problems == [
        (f"{root}: cannot read the workflow path (no such file or directory); workflows loaded "
        "before stay in use")]
    assert not workflows.changed()  # no reload storm while it is gone
    write(root / "etl.toml", BETTER)
    assert workflows.changed()
    assert workflows.reload() == ["etl.toml"]
    assert workflows.problems == []


def test_a_single_file_path(tmp_path: Path) -> None:
    path = tmp_path / "etl.toml"
    write(path, GOOD)
    workflows = WorkflowSet.open(path)
    assert list(workflows.workflows()) == ["etl.toml"]
    write(path, BETTER)
    assert workflows.changed() and workflows.reload() == ["etl.toml"]


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "etl.toml").write_bytes(b'[[phase]]\ntask = "\xff"\n')
    assert load_workflows(tmp_path).problems == ["etl.toml: not UTF-8 text; save it as UTF-8"]


def test_empty_until_reloaded(tmp_path: Path) -> None:
    write(tmp_path / "etl.toml", GOOD)
    workflows = WorkflowSet(tmp_path)  # no I/O in the constructor
    assert workflows.workflows() == {} and workflows.problems == []
    assert workflows.changed()


def test_lookups_follow_go_flowlord(tmp_path: Path) -> None:
    # Given two workflows shaped like the cases of Go's workflow tests
    write(tmp_path / "workflow.toml",
          '[[phase]]\ntask = "task1"\nrule = "cron=@daily"\n'
          '[[phase]]\ntask = "task1:j4"\nrule = "cron=@daily"\n'  # Go's test leaves it out
          '[[phase]]\ntask = "dup"\nrule = "cron=@daily"\n'
          '[[phase]]\ntask = "task2"\ndependsOn = "task1"\n'
          '[[phase]]\ntask = "task3"\ndependsOn = "task2"\n'
          '[[phase]]\ntask = "task4"\ndependsOn = "task2"\n'
          '[[phase]]\ntask = "task5"\ndependsOn = "task1:j4"\n')
    write(tmp_path / "w2job.toml",
          '[[phase]]\ntask = "dup"\nrule = "cron=@daily"\n'
          '[[phase]]\ntask = "t2"\nrule = "cron=@daily&job=j1"\n'
          '[[phase]]\ntask = "t2"\nrule = "cron=@daily&job=j2"\n'
          '[[phase]]\ntask = "t2:j3"\nrule = "cron=@daily"\n')
    workflows = WorkflowSet.open(tmp_path)
    assert workflows.problems == []

    def phase(topic: str, job: str, workflow: str) -> str | None:
        found = workflows.phase(topic, job, workflow=workflow)
        return f"{found.workflow} {found.key}" if found else None

    def children(topic: str, job: str) -> list[str]:
        return [p.key for p in workflows.children(topic, job, workflow="workflow.toml")]

    assert phase("missing", "", "workflow.toml") is None
    assert phase("t2", "j2", "*") == "w2job.toml t2:j2"  # * searches every workflow
    assert phase("task2", "", "workflow.toml") == "workflow.toml task2"
    assert phase("t2", "j1", "w2job.toml") == "w2job.toml t2:j1"
    assert phase("t2", "invalid", "w2job.toml") is None
    assert phase("t2", "j3", "*") == "w2job.toml t2:j3"
    assert phase("dup", "", "*") is not None
    assert children("task1", "") == ["task2"]
    assert children("task2", "") == ["task3", "task4"]
    assert children("task3", "") == []
    assert children("task1", "j4") == ["task2", "task5"]
    assert workflows.children("task1", "", workflow="*") == []  # as Go: * names no workflow here


def test_a_missing_path_at_start(tmp_path: Path) -> None:
    result = load_workflows(tmp_path / "nope")
    assert result.workflows == {}
    assert result.problems == [(f"{tmp_path / 'nope'}: cannot read the workflow path (no such file "
                               "or directory)")]
