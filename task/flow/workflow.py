"""Phases and workflows: what one workflow file says, as values the engine looks up.

A workflow is one TOML file; its name is the file's path under the workflow directory
(``etl.toml``, ``team/daily.toml``) and it is what a task's ``workflow=`` meta carries, as in
Go's flowlord. A phase is one ``[[phase]]`` table: the task it creates (``topic[:job]``), how
it starts (its rule's ``cron``/``files``, or ``dependsOn`` a parent), its retries and template.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from task.flow.rule import Rule

__all__ = ["Phase", "Workflow", "split_key"]


def split_key(text: str) -> tuple[str, str]:
    """``"type:job"`` as ``("type", "job")``; ``"type"`` as ``("type", "")``."""
    topic, _, job = text.strip().partition(":")
    return topic.strip(), job.strip()


@dataclass(frozen=True)
class Phase:
    """One phase of a workflow file, validated."""

    #: the workflow's name (its file's path under the workflow directory, e.g. ``etl.toml``)
    workflow: str
    #: ``task`` as written (``topic`` or ``topic:job``)
    task: str
    #: the task type this phase creates
    topic: str
    #: its job: from ``task``'s ``:job`` or the rule's ``job=``; "" for none
    job: str = ""
    #: the parent as written (``type`` or ``type:job``); "" when the phase is not a child
    depends_on: str = ""
    #: how many times a failed task is retried
    retry: int = 0
    #: the task's info template (time placeholders and ``{meta:key}``)
    template: str = ""
    rule: Rule = field(default_factory=Rule)
    #: 1-based position in its file, for messages
    number: int = 0

    @property
    def key(self) -> str:
        """``type:job``, or ``type`` when there is no job: the phase's name in messages."""
        return f"{self.topic}:{self.job}" if self.job else self.topic

    @property
    def starts_on_cron(self) -> bool:
        """True when the rule has a ``cron=``."""
        return bool(self.rule.cron)

    @property
    def starts_on_files(self) -> bool:
        """True when the rule has a ``files=`` glob."""
        return bool(self.rule.files)

    @property
    def is_child(self) -> bool:
        """True when the phase starts when its ``dependsOn`` parent completes."""
        return bool(self.depends_on)

    @property
    def is_manual(self) -> bool:
        """True when nothing starts the phase by itself: only a backload creates its tasks."""
        return not (self.starts_on_cron or self.starts_on_files or self.is_child)

    def depends_on_key(self) -> tuple[str, str]:
        """``dependsOn`` as ``(type, job)``; job "" matches any job of the type."""
        return split_key(self.depends_on)

    def is_child_of(self, topic: str, job: str) -> bool:
        """True when a done task of ``topic``/``job`` starts this phase: ``dependsOn`` names
        the type and either the same job or none (a job-less ``dependsOn`` matches every job
        of the type, as in Go)."""
        if not self.depends_on:
            return False
        parent, parent_job = self.depends_on_key()
        return parent == topic and (not parent_job or parent_job == job)


@dataclass(frozen=True)
class Workflow:
    """One workflow file's phases, in file order."""

    #: the file's path under the workflow directory (what ``workflow=`` meta carries)
    name: str
    path: Path
    phases: tuple[Phase, ...] = ()

    def children(self, topic: str, job: str = "") -> list[Phase]:
        """The phases a completed task of ``topic``/``job`` starts (see ``Phase.is_child_of``)."""
        return [p for p in self.phases if p.is_child_of(topic, job)]

    def phase(self, topic: str, job: str = "") -> Phase | None:
        """The phase that creates ``topic``/``job`` tasks, or None.

        The phase with exactly that type and job; for a task without a job, failing that, the
        first phase of the type (Go's ``Cache.Get`` does so, for tasks a worker sent back
        without the job).
        """
        for p in self.phases:
            if p.topic == topic and p.job == job:
                return p
        if not job:
            for p in self.phases:
                if p.topic == topic:
                    return p
        return None
