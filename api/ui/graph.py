"""The run page's graph: nodes laid out left to right by dependency depth, as data for the SVG
template. No I/O; O(nodes + edges), so a 1,000-node graph lays out in milliseconds."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NODE_W, NODE_H = 150, 40  # px of one node's box
GAP_X, GAP_Y = 50, 14  # px between columns, between rows
PAD = 10  # px around the drawing
MAX_LABEL_CHARS = 18


@dataclass(frozen=True)
class Box:
    """One node's place and label."""

    node_id: str
    label: str
    type_name: str
    x: int
    y: int


@dataclass(frozen=True)
class Edge:
    """A line from the right side of one box to the left side of another (a cubic path)."""

    source: str
    target: str
    path: str


@dataclass(frozen=True)
class Layout:
    """Boxes, edges and the drawing's size."""

    boxes: list[Box]
    edges: list[Edge]
    width: int
    height: int


def depths(order: Sequence[str], preds: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each node's column: 0 for a root, else one more than its deepest predecessor (`order` is topological)."""
    found: dict[str, int] = {}
    for node_id in order:
        found[node_id] = 1 + max((found[p] for p in preds.get(node_id, ()) if p in found), default=-1)
    return found


def _label(text: str) -> str:
    return text if len(text) <= MAX_LABEL_CHARS else text[:MAX_LABEL_CHARS - 1] + "…"


def layout(order: Sequence[str], preds: Mapping[str, Sequence[str]], titles: Mapping[str, str | None],
           types: Mapping[str, str]) -> Layout:
    """Place every node: column by depth, rows in topological order within a column."""
    column = depths(order, preds)
    rows: dict[int, int] = {}
    place: dict[str, tuple[int, int]] = {}
    boxes: list[Box] = []
    for node_id in order:
        col = column[node_id]
        row = rows.get(col, 0)
        rows[col] = row + 1
        x, y = PAD + col * (NODE_W + GAP_X), PAD + row * (NODE_H + GAP_Y)
        place[node_id] = (x, y)
        boxes.append(Box(node_id, _label(titles.get(node_id) or node_id), types.get(node_id, ""), x, y))
    edges: list[Edge] = []
    for node_id in order:
        tx, ty = place[node_id]
        for pred in preds.get(node_id, ()):
            if pred not in place:
                continue
            sx, sy = place[pred]
            x1, y1, x2, y2 = sx + NODE_W, sy + NODE_H // 2, tx, ty + NODE_H // 2
            mid = (x1 + x2) // 2
            edges.append(Edge(pred, node_id, f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"))
    columns = max(column.values(), default=-1) + 1
    width = PAD * 2 + max(columns, 1) * NODE_W + max(columns - 1, 0) * GAP_X
    height = PAD * 2 + max(max(rows.values(), default=1), 1) * (NODE_H + GAP_Y) - GAP_Y
    return Layout(boxes, edges, width, height)
