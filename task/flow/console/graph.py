"""A workflow drawn as an SVG graph of its phases, laid out on the server (no JavaScript).

The layout is layered, left to right: a phase that starts by itself (cron, files, backload)
is in the first column; a child is one column right of its deepest parent. Within a column
phases keep their file order. Edges go from a parent's right side to its child's left side
as cubic curves with an arrow head. Every node links to the day's tasks of its type:job and
says how it starts in words (never by colour alone). All text is escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from task.flow.workflow import Phase, Workflow
from task.web.page import Markup, esc, tag

__all__ = ["GraphNode", "layout", "render_graph"]

#: node box size and the gaps between columns and rows, in SVG units (px)
NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 210, 58, 70, 18, 10


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One phase placed on the drawing."""

    phase: Phase
    column: int
    row: int

    @property
    def x(self) -> int:
        return PAD + self.column * (NODE_W + GAP_X)

    @property
    def y(self) -> int:
        return PAD + self.row * (NODE_H + GAP_Y)


def _parents(workflow: Workflow, phase: Phase) -> list[Phase]:
    return [p for p in workflow.phases if phase.is_child_of(p.topic, p.job) and p is not phase]


def layout(workflow: Workflow) -> tuple[list[GraphNode], list[tuple[GraphNode, GraphNode]]]:
    """The nodes (column, row) and the parent -> child edges of ``workflow``'s phases.

    A ``dependsOn`` naming no phase of the file (the loader refuses those) or a cycle (refused
    too) cannot loop here: a phase's column is bounded by the number of phases."""
    columns: dict[int, int] = {}
    limit = len(workflow.phases)

    def column(index: int, depth: int = 0) -> int:
        if index in columns:
            return columns[index]
        phase = workflow.phases[index]
        parents = [workflow.phases.index(p) for p in _parents(workflow, phase)]
        if not parents or depth >= limit:
            found = 0
        else:
            found = 1 + max(column(p, depth + 1) for p in parents)
        columns[index] = found
        return found

    rows: dict[int, int] = {}
    nodes: list[GraphNode] = []
    for index, phase in enumerate(workflow.phases):
        col = column(index)
        rows[col] = rows.get(col, -1) + 1
        nodes.append(GraphNode(phase, col, rows[col]))
    by_phase = {id(n.phase): n for n in nodes}
    edges = [(by_phase[id(parent)], node) for node in nodes
             for parent in _parents(workflow, node.phase)]
    return nodes, edges


def _starts(phase: Phase) -> str:
    if phase.starts_on_cron:
        return f"cron {phase.rule.cron}"
    if phase.starts_on_files:
        return f"files {phase.rule.files}"
    if phase.is_child:
        return f"after {phase.depends_on}"
    return "backload only"


def _clip(text: str, width: int = 30) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_graph(
    workflow: Workflow,
    link: Callable[[Phase], str],
    counts: Mapping[str, str] | None = None,
) -> Markup:
    """The SVG of ``workflow``; each node links to ``link(phase)`` and shows ``counts`` of
    its ``type:job`` (a short line such as "3 complete · 1 error") when given."""
    nodes, edges = layout(workflow)
    width = PAD * 2 + (max((n.column for n in nodes), default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + (max((n.row for n in nodes), default=0) + 1) * (NODE_H + GAP_Y) - GAP_Y
    parts: list[str] = [
        ('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" '
        'fill="currentColor"/></marker></defs>')
    ]
    for parent, child in edges:
        x1, y1 = parent.x + NODE_W, parent.y + NODE_H // 2
        x2, y2 = child.x, child.y + NODE_H // 2
        mid = (x1 + x2) // 2
        parts.append(f'<path class="edge" d="M{x1} {y1}C{mid} {y1} {mid} {y2} {x2} {y2}" '
                     'fill="none" stroke="currentColor" stroke-opacity=".55" '
                     'marker-end="url(#arrow)"/>')
    for node in nodes:
        phase = node.phase
        count = (counts or {}).get(phase.key, "")
        title = f"{phase.key}: {_starts(phase)}" + (f" · {count}" if count else "")
        lines = [
            f'<text fill="currentColor" x="{node.x + 10}" y="{node.y + 20}" font-weight="600">{esc(_clip(phase.key, 26))}</text>',
            (f'<text fill="currentColor" x="{node.x + 10}" y="{node.y + 36}" font-size="12" opacity=".75">'
            f"{esc(_clip(_starts(phase), 32))}</text>"),
        ]
        if count:
            lines.append(f'<text fill="currentColor" x="{node.x + 10}" y="{node.y + 51}" font-size="12">'
                         f"{esc(_clip(count, 32))}</text>")
        parts.append(
            f'<a href="{esc(link(phase))}" class="phase-node" data-phase="{esc(phase.key)}">'
            f"<title>{esc(title)}</title>"
            f'<rect x="{node.x}" y="{node.y}" width="{NODE_W}" height="{NODE_H}" rx="6" '
            'fill="var(--panel, #fff)" stroke="currentColor" stroke-opacity=".6"/>'
            f"{''.join(lines)}</a>"
        )
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" class="workflow-graph" role="img" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'aria-label="{esc("phases of " + workflow.name)}" '
           f'style="max-width:100%;height:auto;color:var(--fg, #222);font-family:system-ui,sans-serif;'
           f'font-size:14px">{"".join(parts)}</svg>')
    return tag("div", Markup(svg), class_="graph")
