"""A compiled pipeline drawn as an SVG picture: its tasks, their order and its conditions.

``tlops generate`` draws ``pipelines/compiled/<name>.yaml`` into ``docs/img/pipeline-<name>.svg``
(and ``--check`` fails when the picture is stale), so the documentation shows the graph KFP
runs, not a drawing of it. Tasks are laid out in columns by their longest path from a root;
the tasks under a condition (``dsl.If``) sit in a dashed box named by the condition's value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape
from typing import Any

import yaml

BOX_W, BOX_H, GAP_X, GAP_Y, PAD, LABEL_H = 150, 34, 46, 16, 14, 22


@dataclass
class _Task:
    name: str  # the task's name in the compiled spec (ingest-data-2)
    label: str  # the step it runs (ingest_data)
    group: str  # the condition it is under ("" at the top level)
    after: list[str]  # what it runs after (for the layout: a condition's tasks after its inputs)
    drawn: list[str]  # what it depends on as the spec says (a task or a condition)


def _tasks(
    spec: dict[str, Any],
) -> tuple[list[_Task], dict[str, str], dict[str, list[str]]]:
    """Every task of the pipeline, flattened; each condition's label and what it depends on."""
    tasks: list[_Task] = []
    labels: dict[str, str] = {}
    inputs: dict[str, list[str]] = {}

    def walk(dag: dict[str, Any], group: str, entry: list[str]) -> None:
        for name, task in sorted(dag["tasks"].items()):
            component = spec["components"][task["componentRef"]["name"]]
            after = list(task.get("dependentTasks", []))
            if "dag" in component:
                condition = task.get("triggerPolicy", {}).get("condition", "")
                value = re.findall(r"== '([^']+)'", condition)
                labels[name] = f"if {' or '.join(value) or name}"
                inputs[name] = after
                walk(component["dag"], name, after)
                continue
            label = re.sub(r"-\d+$", "", name).replace("-", "_")
            tasks.append(_Task(name, label, group, after or list(entry), after))

    walk(spec["root"]["dag"], "", [])
    # a dependency on a condition is a dependency on every task inside it
    members = {g: [t.name for t in tasks if t.group == g] for g in labels}
    for task in tasks:
        task.after = [n for dep in task.after for n in members.get(dep, [dep])]
    return tasks, labels, inputs


def _edges(tasks: list[_Task], inputs: dict[str, list[str]]) -> list[tuple[str, str]]:
    """The arrows to draw: each dependency once, a condition's inputs to its box.

    None that another path already implies (KFP lists every producer of a task's inputs, so
    ingest_data would point at nearly every task).
    """
    edges = [(dep, t.name) for t in tasks for dep in t.drawn]
    edges += [(dep, group) for group, deps in inputs.items() for dep in deps]
    following: dict[str, set[str]] = {}
    for source, target in edges:
        following.setdefault(source, set()).add(target)

    def reaches(start: str, goal: str, skip: tuple[str, str]) -> bool:
        seen, stack = set(), [start]
        while stack:
            node = stack.pop()
            for nxt in following.get(node, ()):
                if (node, nxt) == skip or nxt in seen:
                    continue
                if nxt == goal:
                    return True
                seen.add(nxt)
                stack.append(nxt)
        return False

    return [(a, b) for a, b in edges if not reaches(a, b, (a, b))]


def _columns(tasks: list[_Task]) -> dict[str, int]:
    column: dict[str, int] = {}
    by_name = {t.name: t for t in tasks}

    def depth(name: str) -> int:
        if name not in column:
            after = [d for d in by_name[name].after if d in by_name]
            column[name] = 1 + max((depth(d) for d in after), default=-1)
        return column[name]

    for task in tasks:
        depth(task.name)
    return column


def pipeline_svg(compiled: str) -> str:
    """The SVG picture of a compiled pipeline (the YAML ``tlops compile`` writes)."""
    spec = next(iter(yaml.safe_load_all(compiled)))
    tasks, labels, inputs = _tasks(spec)
    column = _columns(tasks)
    rows: dict[str, int] = {}
    shift: dict[str, int] = {}  # pixels below a task's row: the labels of the boxes above it
    next_row, extra = 0, 0
    for group in ["", *labels]:  # each condition gets rows of its own, below the top level
        members = [t for t in tasks if t.group == group]
        extra += LABEL_H if group and members else 0
        used: dict[int, int] = {}
        for task in sorted(members, key=lambda t: (column[t.name], t.name)):
            rows[task.name] = next_row + used.get(column[task.name], 0)
            shift[task.name] = extra
            used[column[task.name]] = used.get(column[task.name], 0) + 1
        next_row += max(used.values(), default=0)
    top = PAD + 18  # room for the title

    def x(task: _Task) -> int:
        return PAD + column[task.name] * (BOX_W + GAP_X)

    def y(task: _Task) -> int:
        return top + rows[task.name] * (BOX_H + GAP_Y) + shift[task.name]

    width = PAD * 2 + (max(column.values()) + 1) * (BOX_W + GAP_X) - GAP_X
    height = top + next_row * (BOX_H + GAP_Y) - GAP_Y + extra + PAD
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
        f'<text x="{PAD}" y="{PAD + 4}" font-weight="bold">{escape(spec["pipelineInfo"]["name"])}'
        "</text>",
    ]
    # where an arrow leaves (right, middle) and arrives (left, middle), for tasks and boxes
    ends: dict[str, tuple[int, int, int]] = {
        t.name: (x(t), x(t) + BOX_W, y(t) + BOX_H // 2) for t in tasks
    }
    for group, label in labels.items():
        inside = [t for t in tasks if t.group == group]
        if not inside:
            continue
        left, right = min(map(x, inside)) - 10, max(map(x, inside)) + BOX_W + 10
        upper, lower = min(map(y, inside)) - 8, max(map(y, inside)) + BOX_H + 8
        ends[group] = (left, right, (upper + lower) // 2)
        out.append(
            f'<rect x="{left}" y="{upper}" width="{right - left}" height="{lower - upper}" '
            'fill="none" stroke="#8a8a8a" stroke-dasharray="5,4" rx="6"/>'
        )
        out.append(
            f'<text x="{left + 4}" y="{upper - 5}" fill="#555" font-size="12">'
            f"{escape(label)}</text>"
        )
    for source, target in _edges(tasks, inputs):
        if source not in ends or target not in ends:
            continue
        x1, y1 = ends[source][1], ends[source][2]
        x2, y2 = ends[target][0], ends[target][2]
        bend = max((x2 - x1) // 2, 20)
        out.append(
            f'<path d="M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}" fill="none" '
            'stroke="#555" marker-end="url(#arrow)"/>'
        )
    for task in tasks:
        out.append(
            f'<rect x="{x(task)}" y="{y(task)}" width="{BOX_W}" height="{BOX_H}" rx="5" '
            'fill="#e8eaf6" stroke="#3f51b5"/>'
        )
        out.append(
            f'<text x="{x(task) + BOX_W // 2}" y="{y(task) + BOX_H // 2 + 4}" '
            f'text-anchor="middle">{escape(task.label)}</text>'
        )
    return "\n".join([*out, "</svg>"]) + "\n"
