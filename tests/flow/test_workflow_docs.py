"""docs/flow-workflows.md stays true: its example loads and it documents every rule key."""

from __future__ import annotations

import re
from pathlib import Path

from task.flow.loader import load_workflows
from task.flow.rule import RULE_KEYS

DOC = Path(__file__).resolve().parents[2] / "docs" / "flow-workflows.md"


def test_the_example_loads(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert blocks
    for number, block in enumerate(blocks):
        (tmp_path / f"example{number}.toml").write_text(block)
    result = load_workflows(tmp_path)
    assert result.problems == [] and result.warnings == []
    assert len(result.workflows) == len(blocks)


def test_every_rule_key_is_documented() -> None:
    rows = re.findall(r"^\| `([a-z_-]+)` \| `", DOC.read_text(), re.MULTILINE)
    assert sorted(rows) == sorted(RULE_KEYS)
