"""Workflow files from a path (one ``.toml`` file or a directory of them, recursively), and
the set of loaded workflows the engine looks phases up in, reloaded when files change.

A bad file never replaces a good one: ``WorkflowSet.reload`` swaps a file's workflow only when
the file has no problem now; its problems stay readable (``WorkflowSet.problems``) until it is
fixed. A deleted file's workflow goes away, as in Go; a vanished workflow path keeps them all.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from task.flow.workflow import Phase, Workflow
from task.flow.workflow_file import parse_workflow

__all__ = ["ANY_WORKFLOW", "LoadResult", "WorkflowSet", "load_workflows"]

logger = logging.getLogger(__name__)

#: ``workflow=*`` meta: Go's flowlord looks a task's phase up in every workflow
ANY_WORKFLOW = "*"
#: (mtime in ns, size) of each workflow file: what ``changed`` compares
_Stamps = dict[Path, tuple[int, int]]


@dataclass
class LoadResult:
    """Workflows by name, and one line per problem (files with problems are left out) and per
    warning (their files load)."""

    workflows: dict[str, Workflow] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _File:
    digest: str
    problems: list[str]
    warnings: list[str]


def load_workflows(path: Path) -> LoadResult:
    """Every workflow under ``path`` (a ``.toml`` file, or a directory searched recursively
    for ``*.toml``, hidden files left out), validated."""
    workflows = WorkflowSet(path)
    workflows.reload()
    return LoadResult(workflows.workflows(), workflows.problems, workflows.warnings)


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(
        p for p in root.rglob("*.toml")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _stamps(files: list[Path]) -> _Stamps:
    stamps: _Stamps = {}
    for p in files:
        try:
            st = p.stat()
        except OSError:
            continue  # gone between the listing and the stat: the next look sees it gone
        stamps[p] = (st.st_mtime_ns, st.st_size)
    return stamps


class WorkflowSet:
    """The loaded workflows of one path, and lookups across them.

    Empty until ``reload()``; reloading is the caller's to schedule (poll ``changed()``).
    Lookups take an optional workflow name (a task's ``workflow=`` meta); without one they
    search every workflow in name order.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._workflows: dict[str, Workflow] = {}
        self._loaded_at: dict[str, datetime] = {}
        self._files: dict[str, _File] = {}
        self._stamps: _Stamps = {}
        self._path_problem = ""

    @classmethod
    def open(cls, path: Path) -> WorkflowSet:
        """A set loaded from ``path`` now (see ``reload``)."""
        workflows = cls(path)
        workflows.reload()
        return workflows

    def _name(self, file: Path) -> str:
        if file == self.path:
            return file.name
        return file.relative_to(self.path).as_posix()

    def changed(self) -> bool:
        """True when a workflow file was added, removed, or its mtime or size changed since the
        last ``reload`` (a few ``stat`` calls: cheap enough to poll every few seconds)."""
        try:
            return _stamps(_files(self.path)) != self._stamps
        except OSError:
            return True

    def reload(self) -> list[str]:
        """Read the files again; return the names of workflows added, replaced or removed.

        A file whose content is unchanged is not parsed again; a file with problems keeps its
        previous workflow (if any) and its problems are logged once and kept in ``problems``.
        """
        try:
            if not self.path.exists():
                raise FileNotFoundError(self.path)
            files = _files(self.path)
        except OSError as err:
            why = getattr(err, "strerror", None) or "no such file or directory"
            kept = "; workflows loaded before stay in use" if self._workflows else ""
            self._path_problem = f"{self.path}: cannot read the workflow path ({why}){kept}"
            logger.error("%s", self._path_problem)
            self._stamps = {}  # so changed() stays False until the path is back
            return []
        self._path_problem = "" if files else (
            f"{self.path}: no workflow files (*.toml) here; write one, see docs/flow-workflows.md")
        self._stamps = _stamps(files)
        changed: list[str] = []
        names = set()
        for file in files:
            name = self._name(file)
            names.add(name)
            if self._load(file, name):
                changed.append(name)
        for name in sorted(set(self._workflows) - names):
            del self._workflows[name]
            self._loaded_at.pop(name, None)
            changed.append(name)
            logger.info("workflow %s removed", name)
        for name in set(self._files) - names:
            del self._files[name]
        return changed

    def _load(self, file: Path, name: str) -> bool:
        try:
            data = file.read_bytes()
        except OSError as err:
            self._files[name] = _File("", [f"{name}: cannot read it ({err.strerror or err})"], [])
            return False
        digest = hashlib.sha256(data).hexdigest()
        known = self._files.get(name)
        if known is not None and known.digest == digest:
            return False
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            parsed_problems = [f"{name}: not UTF-8 text; save it as UTF-8"]
            parsed = None
        else:
            result = parse_workflow(text, name, file)
            parsed, parsed_problems = result, result.problems
        if parsed is None or parsed.workflow is None:
            problems = list(parsed_problems)
            if name in self._workflows:
                loaded = self._loaded_at[name].strftime("%Y-%m-%d %H:%M:%S UTC")
                problems.append(f"{name}: not reloaded; the version loaded at {loaded} "
                                "stays in use")
            for line in problems:
                logger.error("%s", line)
            self._files[name] = _File(digest, problems, parsed.warnings if parsed else [])
            return False
        for line in parsed.warnings:
            logger.warning("%s", line)
        self._files[name] = _File(digest, [], parsed.warnings)
        self._workflows[name] = parsed.workflow
        self._loaded_at[name] = datetime.now(UTC)
        logger.info("workflow %s loaded: %d phases", name, len(parsed.workflow.phases))
        return True

    @property
    def problems(self) -> list[str]:
        """One line per problem found by the last ``reload`` (for ``/info``)."""
        lines = [self._path_problem] if self._path_problem else []
        for name in sorted(self._files):
            lines.extend(self._files[name].problems)
        return lines

    @property
    def warnings(self) -> list[str]:
        """One line per warning about the files as they are now."""
        return [line for name in sorted(self._files) for line in self._files[name].warnings]

    def loaded_at(self, name: str) -> datetime | None:
        """When workflow ``name``'s current version was loaded (UTC), or None."""
        return self._loaded_at.get(name)

    def workflows(self) -> dict[str, Workflow]:
        """The loaded workflows by name, in name order (a copy)."""
        return dict(sorted(self._workflows.items()))

    def workflow(self, name: str) -> Workflow | None:
        """The workflow called ``name`` (a task's ``workflow=`` meta), or None."""
        return self._workflows.get(name)

    def _search(self, workflow: str | None) -> list[Workflow]:
        if workflow is None or workflow == ANY_WORKFLOW:
            return list(self.workflows().values())
        found = self._workflows.get(workflow)
        return [found] if found is not None else []

    def phases(self) -> list[Phase]:
        """Every phase of every workflow, in name and file order."""
        return [p for w in self.workflows().values() for p in w.phases]

    def phase(self, topic: str, job: str = "", workflow: str | None = None) -> Phase | None:
        """The phase making ``topic``/``job`` tasks (see ``Workflow.phase``), in ``workflow``
        or, without one or with ``*`` (Go's wildcard), in the first workflow that has it."""
        for w in self._search(workflow):
            found = w.phase(topic, job)
            if found is not None:
                return found
        return None

    def children(self, topic: str, job: str = "", workflow: str | None = None) -> list[Phase]:
        """The phases a completed ``topic``/``job`` task starts, in ``workflow`` (Go looks in
        the task's own workflow only, and ``*`` names none there either) or, without one, in
        all."""
        if workflow == ANY_WORKFLOW:
            return []
        return [p for w in self._search(workflow) for p in w.children(topic, job)]

    def cron_phases(self) -> list[Phase]:
        """The phases a cron starts."""
        return [p for p in self.phases() if p.starts_on_cron]

    def file_phases(self) -> list[Phase]:
        """The phases a file's arrival starts."""
        return [p for p in self.phases() if p.starts_on_files]
