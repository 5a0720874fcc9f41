"""One workflow file's text as a ``Workflow``, or the list of what is wrong with it.

Every problem is one line naming the file, the phase (its position and task) and what to
write instead; a file with any problem yields no workflow, so the loader keeps the last good
one. Warnings (a phase nothing starts, a placeholder it does not know, a key it ignores) do
not stop the file loading.

A phase with no ``cron``, no ``files`` and no ``dependsOn`` loads with a warning, as in Go's
flowlord (which marks it "non-scheduled phase" and keeps it): only a backload starts it.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from task.errors import ConfigError
from task.flow.rule import Rule, parse_rule
from task.flow.template import meta_keys
from task.flow.workflow import Phase, Workflow, split_key
from task.timetemplate import unknown_placeholders

__all__ = ["ParsedFile", "parse_workflow"]

#: phase keys in lower case -> as Go's files write them (Go's TOML reader ignores case)
_PHASE_KEYS = {k.lower(): k for k in ("task", "rule", "dependsOn", "retry", "template")}
#: meta a file phase's task gets besides its rule's keys (Go's ``matchFile``)
_FILE_META = {"file", "filename", "workflow"}
_AT_LINE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


@dataclass
class ParsedFile:
    """What ``parse_workflow`` found: the workflow when the file has no problem."""

    workflow: Workflow | None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _hint(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word.lower(), [c.lower() for c in choices], n=1)
    if close:
        return f"; did you mean {next(c for c in choices if c.lower() == close[0])!r}?"
    return f"; known keys: {', '.join(choices)}"


def _tables(doc: dict[str, Any], name: str, problems: list[str]) -> list[Any]:
    """The ``[[phase]]``/``[[Phase]]`` tables of ``doc``; top-level mistakes into problems."""
    tables: list[Any] = []
    names = [key for key in doc if key.lower() == "phase"]
    for key in doc:
        if key.lower() != "phase":
            problems.append(f"{name}: unknown top-level key {key!r}{_hint(key, ['phase'])} "
                            "(a workflow file holds [[phase]] tables)")
    if len(names) > 1:
        problems.append(f"{name}: both {' and '.join(f'[[{n}]]' for n in names)}; "
                        "write every table as [[phase]]")
    for key in names:
        value = doc[key]
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            problems.append(f"{name}: {key!r} must be [[{key}]] tables, one per phase")
            continue
        tables.extend(value)
    if not tables and not problems:
        problems.append(f"{name}: no [[phase]] tables; write at least one")
    return tables


def _fields(table: dict[str, Any], label: str, problems: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in table.items():
        canon = _PHASE_KEYS.get(key.lower())
        if canon is None:
            problems.append(f"{label}: unknown key {key!r}{_hint(key, list(_PHASE_KEYS.values()))}")
        elif canon in fields:
            problems.append(f"{label}: {canon!r} is given twice (keys ignore case); keep one")
        elif canon == "retry" and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{label}: retry = {value!r} must be a whole number (retry = 3)")
        elif canon == "retry" and value < 0:
            problems.append(f"{label}: retry = {value} cannot be negative")
        elif canon != "retry" and not isinstance(value, str):
            problems.append(f"{label}: {canon} = {value!r} must be a string (in quotes)")
        else:
            fields[canon] = value
    return fields


def _phase(table: dict[str, Any], number: int, name: str, out: ParsedFile) -> Phase | None:
    task = table.get(next((k for k in table if k.lower() == "task"), "task"))
    label = f"{name}: phase {number}" + (f" ({task})" if isinstance(task, str) and task else "")
    before = len(out.problems)
    fields = _fields(table, label, out.problems)
    task = fields.get("task", "").strip()
    if not task:
        out.problems.append(f"{label}: no task; write task = \"type\" or \"type:job\"")
    topic, job = split_key(task)
    if task and (not topic or ":" in job):
        out.problems.append(f"{label}: task {task!r} must be \"type\" or \"type:job\"")
    rule = Rule()
    try:
        rule = parse_rule(fields.get("rule", ""))
    except ConfigError as err:
        out.problems.append(f"{label}: rule: {err}")
    if job and rule.job and job != rule.job:
        out.problems.append(f"{label}: task {task!r} and rule job={rule.job} disagree; keep one")
    depends = fields.get("dependsOn", "").strip()
    if depends and (not split_key(depends)[0] or ":" in split_key(depends)[1]):
        out.problems.append(f"{label}: dependsOn {depends!r} must be \"type\" or \"type:job\"")
    if len(out.problems) > before:
        return None
    phase = Phase(workflow=name, task=task, topic=topic, job=job or rule.job, depends_on=depends,
                  retry=fields.get("retry", 0), template=fields.get("template", ""), rule=rule,
                  number=number)
    _check_start(phase, label, out)
    return phase


def _check_start(phase: Phase, label: str, out: ParsedFile) -> None:
    """Problems and warnings about how the phase starts and what its template needs."""
    rule = phase.rule
    if rule.for_ is not None and not phase.starts_on_cron:
        out.warnings.append(f"{label}: for= is ignored: only a cron phase makes batches")
    if phase.is_manual:
        out.warnings.append(f"{label}: nothing starts it (no cron, files or dependsOn); only a "
                            "backload creates its tasks")
    if rule.offset and not phase.starts_on_cron:
        out.warnings.append(f"{label}: offset= is ignored: only a cron phase's time is shifted")
    if rule.require and not phase.is_child:
        out.warnings.append(f"{label}: require= is ignored: only a dependsOn phase has a parent")
    if rule.meta_file and "://" not in rule.meta_file and not Path(rule.meta_file).is_file():
        out.warnings.append(f"{label}: meta-file {rule.meta_file} is not there (a relative path "
                            "is read from flow's working directory); its batches will fail")
    for bad in unknown_placeholders(phase.template):
        out.warnings.append(f"{label}: template placeholder {bad} is unknown and stays as written")
    known: set[str] | None = None
    if phase.starts_on_cron and not rule.meta_file:
        known = {k for k, _ in rule.meta}
    elif phase.starts_on_files and not phase.is_child:
        known = _FILE_META | {k for k, _ in rule.meta} | _rule_keys(rule)
    for key in meta_keys(phase.template):
        if known is not None and key not in known:
            out.warnings.append(f"{label}: template uses {{meta:{key}}} but nothing gives this "
                                "phase that meta; its tasks cannot be made")


def _rule_keys(rule: Rule) -> set[str]:
    return {part.partition("=")[0] for part in rule.text.removeprefix("?").split("&") if part}


def _check_graph(phases: list[Phase], name: str, problems: list[str]) -> None:
    """Duplicate phases, ``dependsOn`` naming no phase, and cycles."""
    seen: dict[str, Phase] = {}
    for p in phases:
        if p.key in seen:
            problems.append(f"{name}: phase {p.number} ({p.task}): same task as phase "
                            f"{seen[p.key].number} ({p.key}); give one another job "
                            f"(task = \"{p.topic}:other\")")
        else:
            seen[p.key] = p
    for p in phases:
        if not p.is_child:
            continue
        parent, job = p.depends_on_key()
        if not any(q.topic == parent and (not job or q.job == job) for q in phases):
            keys = [q.key for q in phases if q is not p]
            close = difflib.get_close_matches(p.depends_on, keys, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{name}: phase {p.number} ({p.task}): dependsOn {p.depends_on!r} "
                            f"names no phase{hint}")
    _check_cycles(phases, name, problems)


def _check_cycles(phases: list[Phase], name: str, problems: list[str]) -> None:
    children = {id(p): [c for c in phases if c.is_child_of(p.topic, p.job)] for p in phases}
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    reported: set[frozenset[int]] = set()

    def visit(p: Phase, path: list[Phase]) -> None:
        state[id(p)] = 1
        path.append(p)
        for c in children[id(p)]:
            if state.get(id(c)) == 1:
                loop = path[path.index(c):] + [c]
                members = frozenset(id(q) for q in loop)
                if members not in reported:
                    reported.add(members)
                    chain = " -> ".join(q.key for q in loop)
                    problems.append(f"{name}: dependsOn cycle {chain}; {_loop_hint(loop)}")
            elif id(c) not in state:
                visit(c, path)
        path.pop()
        state[id(p)] = 2

    for p in phases:
        if id(p) not in state:
            visit(p, [])


def _loop_hint(loop: list[Phase]) -> str:
    p = loop[0]
    parent, job = p.depends_on_key()
    if len(loop) == 2 and not job and parent == p.topic and p.job:
        # ``task = "w:b"``, ``dependsOn = "w"``: a job-less dependsOn follows every job of w
        return (f"dependsOn {p.depends_on!r} without a job follows every job of {parent}, "
                f"this one too; name the parent's job (dependsOn = \"{parent}:...\")")
    return "a phase cannot wait for itself, break the loop"


def _toml_problem(name: str, err: tomllib.TOMLDecodeError) -> str:
    text = str(err)
    m = _AT_LINE.search(text)
    where = f"line {m.group(1)}, column {m.group(2)}" if m else "somewhere"
    return f"{name}: {where}: not valid TOML: {_AT_LINE.sub('', text)}"


def parse_workflow(text: str, name: str, path: Path) -> ParsedFile:
    """The workflow ``text`` (TOML) describes, named ``name`` (problems start with it)."""
    out = ParsedFile(None)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        out.problems.append(_toml_problem(name, err))
        return out
    phases: list[Phase] = []
    for number, table in enumerate(_tables(doc, name, out.problems), 1):
        phase = _phase(table, number, name, out)
        if phase is not None:
            phases.append(phase)
    _check_graph(phases, name, out.problems)
    if not out.problems:
        out.workflow = Workflow(name=name, path=path, phases=tuple(phases))
    return out
