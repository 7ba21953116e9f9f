"""The run page's timeline: one bar per node that started, from its start to its end (or now), on
one time axis; retries show as the attempt count. No I/O."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

LABEL_W, BAR_W, ROW_H = 130, 560, 20  # px: node names, the time axis, one row
MAX_ROWS = 200  # a bigger run shows its first 200 nodes to start (the graph shows them all)


@dataclass(frozen=True)
class Bar:
    """One node's span."""

    node_id: str
    status: str
    x: int
    width: int
    y: int
    label: str


@dataclass(frozen=True)
class Timeline:
    """The bars, the span they cover (s) and the drawing's size."""

    bars: list[Bar]
    span_s: float
    width: int
    height: int
    hidden: int  # nodes that started but are not drawn (past MAX_ROWS)


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def timeline(nodes: Sequence[dict[str, Any]], now: datetime) -> Timeline:
    """Bars for the nodes that started, earliest first."""
    spans = []
    for node in nodes:
        start = _at(node.get("started_at"))
        if start is not None and not node.get("reused"):  # a rerun's reused node ran in its source run
            spans.append((start, _at(node.get("finished_at")) or now, node))
    spans.sort(key=lambda s: s[0])
    shown = spans[:MAX_ROWS]
    if not shown:
        return Timeline([], 0.0, LABEL_W + BAR_W, 0, 0)
    origin = shown[0][0]
    span_s = max((end - origin).total_seconds() for _, end, _ in shown) or 0.001
    bars = []
    for row, (start, end, node) in enumerate(shown):
        x = LABEL_W + int(BAR_W * (start - origin).total_seconds() / span_s)
        width = max(2, int(BAR_W * (end - start).total_seconds() / span_s))
        took = (end - start).total_seconds()
        retries = f" · {node['attempts']} attempts" if node.get("attempts", 0) > 1 else ""
        bars.append(Bar(node["node_id"], node["status"], x, width, row * ROW_H, f"{took:.2f} s{retries}"))
    return Timeline(bars, span_s, LABEL_W + BAR_W + 8, len(bars) * ROW_H, len(spans) - len(shown))
