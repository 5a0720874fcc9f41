"""Every tool a test runs is found without PATH (issue 11, item 2).

The README runs ``.venv/bin/pytest`` without activating the venv, so on a fresh machine the
venv's ``bin`` is not on PATH: a test that looked up ``hadolint`` there failed for every new
user. These tests run the lookups with PATH pointing at an empty directory, and read the test
sources so that no new ``shutil.which`` or bare command name creeps back in.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from tests.servers.tools import TOOLS, Tool, find_tool

REPO = Path(__file__).resolve().parents[1]

#: the functions that start a program named by their first argument, by module
_STARTERS = {
    "subprocess": {"run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput",
                   "create_subprocess_exec", "create_subprocess_shell"},
    "asyncio": {"create_subprocess_exec", "create_subprocess_shell"},
    "os": {"system", "popen", "execv", "execvp", "execvpe", "execlp", "execlpe", "spawnlp", "spawnvp"},
}
#: the same functions imported by name (``from subprocess import Popen``)
_BARE_STARTERS = {"Popen", "check_call", "check_output", "create_subprocess_exec", "create_subprocess_shell"}


@pytest.mark.parametrize("tool", TOOLS, ids=lambda tool: tool.name)
def test_each_tool_is_found_and_runs_with_nothing_on_path(
    tool: Tool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a PATH with nothing on it, as for `.venv/bin/pytest` run from a shell without the venv
    monkeypatch.setenv("PATH", str(tmp_path))
    # When the tests look the tool up
    found = find_tool(tool)
    # Then it is the installed package's own file, and it runs
    assert found.is_absolute() and found.is_file()
    done = subprocess.run([str(found), "--version"], capture_output=True, text=True, timeout=60,
                          check=False, env={"PATH": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_missing_tool_fails_the_test_naming_the_package_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a tool whose package is not installed, even if a same-named program is on PATH
    (tmp_path / "no-such-tool").write_text("#!/bin/sh\n")
    (tmp_path / "no-such-tool").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    # Then the test fails (it does not skip, nor use PATH) and says what to install
    with pytest.raises(pytest.fail.Exception, match=r"pip install no-such-dist\b"):
        find_tool(Tool("no-such-tool", "no-such-dist"))


def _sources() -> list[Path]:
    task = REPO / "task"
    return sorted([*(REPO / "tests").rglob("*.py"), *(task / "bench").rglob("*.py")])


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _starts_a_program(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in _BARE_STARTERS
    if isinstance(func, ast.Attribute):
        module = _name(func.value)  # subprocess.run, asyncio.create_subprocess_exec, os.system
        return func.attr in _STARTERS.get(module, set())
    return False


def _program(call: ast.Call) -> ast.expr | None:
    if not call.args:
        return None
    first = call.args[0]
    if isinstance(first, ast.List | ast.Tuple) and first.elts:
        return first.elts[0]
    return first


def path_lookups(source: str) -> list[str]:
    """What in ``source`` would find a program on PATH: ``shutil.which``, a program named by a
    literal string, or ``os.environ["PATH"]`` read to search it."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = _name(node.func)
            program = _program(node)
            if name == "which":
                found.append(f"line {node.lineno}: which()")
            elif _starts_a_program(node.func) and isinstance(program, ast.Constant) and isinstance(program.value, str):
                found.append(f"line {node.lineno}: {name}({program.value!r} ...)")
            elif name == "get" and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "PATH":
                found.append(f"line {node.lineno}: environ.get('PATH')")
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == "PATH":
            found.append(f"line {node.lineno}: environ['PATH']")
    return found


def test_the_lookup_guard_sees_each_way_of_using_path() -> None:
    source = (
        'shutil.which("hadolint")\nsubprocess.run(["openssl", "req"])\n'
        'asyncio.create_subprocess_exec("taskbus", "worker")\nos.environ["PATH"]\n'
        'subprocess.run([sys.executable, "-m", "task.cli"])\n'
    )
    assert len(path_lookups(source)) == 4


def test_no_test_or_benchmark_finds_a_program_on_path() -> None:
    # Every program a test or benchmark starts is sys.executable or a path from find_tool
    offenders = {
        str(path.relative_to(REPO)): lookups
        for path in _sources()
        if path != Path(__file__).resolve() and (lookups := path_lookups(path.read_text("utf-8")))
    }
    assert offenders == {}, f"use sys.executable or tests.servers.tools.find_tool: {offenders}"

