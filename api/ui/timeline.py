"""The run page's timeline (a Gantt): one row per node that started, on one time axis, with each
part of its life as a bar — time queued, each attempt (failed ones from `attempt_log`), the
backoff wait after a failed attempt, and the time waiting for an answer to a question or form.
No I/O: it reads the node rows and the run's questions as the store returns them.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

LABEL_W, BAR_W, ROW_H = 130, 620, 20  # px: node names, the time axis, one row
MAX_ROWS = 200  # a bigger run shows its first 200 nodes to start (the graph shows them all)
KINDS = {"queued": "queued", "attempt": "attempt", "backoff": "retry backoff", "wait": "waiting for an answer"}


@dataclass(frozen=True)
class Segment:
    """One part of a node's life: `kind` (queued, attempt, backoff, wait), its status, where it is drawn."""

    kind: str
    status: str
    x: int
    width: int
    title: str


@dataclass(frozen=True)
class Row:
    """One node's segments and its total time."""

    node_id: str
    status: str
    y: int
    segments: list[Segment]
    label: str


@dataclass(frozen=True)
class Timeline:
    """The rows, the span they cover (s) and the drawing's size."""

    rows: list[Row]
    span_s: float
    width: int
    height: int
    hidden: int  # nodes that started but are not drawn (past MAX_ROWS)


def parse_time(value: Any) -> datetime | None:
    """A datetime from a row's value (a datetime, or ISO text from a jsonb read); None if neither."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _spans(node: dict[str, Any], waits: Iterable[tuple[datetime, datetime]],
           now: datetime) -> list[tuple[str, str, datetime, datetime, str]]:
    """(kind, status, start, end, what) for one node, from its row."""
    start, end = parse_time(node.get("started_at")), parse_time(node.get("finished_at")) or now
    assert start is not None
    spans: list[tuple[str, str, datetime, datetime, str]] = []
    last_start: datetime | None = None
    logged_last = False
    for entry in node.get("attempt_log") or ():
        began, ended = parse_time(entry.get("started_at")), parse_time(entry.get("at"))
        if began is None or ended is None:  # written before attempts carried their start (or a crash)
            continue
        failed = "error" in entry
        n = entry.get("attempt", "?")
        spans.append(("attempt", "failed" if failed else node["status"], began, ended,
                      f"attempt {n}" + (f" failed: {(entry.get('error') or {}).get('message', '')}" if failed else "")))
        if entry.get("backoff_s"):
            spans.append(("backoff", "retrying", ended, ended + timedelta(seconds=float(entry["backoff_s"])),
                          f"backoff {float(entry['backoff_s']):.2f} s before attempt {int(n) + 1 if str(n).isdigit() else '?'}"))
        last_start = began
        logged_last = not failed
    queued = parse_time(node.get("queued_at"))
    if not logged_last:  # the current (or last, unlogged) attempt
        begun = start if last_start is None else max(queued or start, spans[-1][3])
        if node["status"] not in ("queued", "retrying", "waiting"):
            spans.append(("attempt", node["status"], begun, end, f"attempt {node.get('attempts') or 1}"))
        last_start = begun
    if queued is not None and last_start is not None and queued < last_start:
        spans.append(("queued", "queued", queued, last_start, "queued"))
    for asked, answered in waits:
        spans.append(("wait", "interrupted", asked, answered, "waiting for an answer"))
    return spans


def timeline(nodes: Sequence[dict[str, Any]], waits: Sequence[dict[str, Any]], now: datetime) -> Timeline:
    """Rows for the nodes that started, earliest first (`waits`: the run's questions, asked and answered at)."""
    by_node: dict[str, list[tuple[datetime, datetime]]] = {}
    for wait in waits:
        asked = parse_time(wait.get("created_at"))
        if asked is not None:
            by_node.setdefault(wait["node_id"], []).append((asked, parse_time(wait.get("answered_at")) or now))
    found = []
    for node in nodes:
        if parse_time(node.get("started_at")) is None or node.get("reused"):  # a reused node ran in its source run
            continue
        spans = _spans(node, by_node.get(node["node_id"], ()), now)
        if spans:
            found.append((min(s[2] for s in spans), max(s[3] for s in spans), node, spans))
    found.sort(key=lambda f: f[0])
    shown = found[:MAX_ROWS]
    if not shown:
        return Timeline([], 0.0, LABEL_W + BAR_W, 0, 0)
    origin = shown[0][0]
    span_s = max((end - origin).total_seconds() for _, end, _, _ in shown) or 0.001

    def x(moment: datetime) -> int:
        return LABEL_W + int(BAR_W * (moment - origin).total_seconds() / span_s)

    rows = []
    for index, (first, last, node, spans) in enumerate(shown):
        segments = [Segment(kind, status, x(a), max(2, x(b) - x(a)),
                            f"{what}: {(b - a).total_seconds():.2f} s (from +{(a - origin).total_seconds():.2f} s)")
                    for kind, status, a, b, what in sorted(spans, key=lambda s: (s[2], s[0] != "queued"))]
        tries = node.get("attempts") or 0
        rows.append(Row(node["node_id"], node["status"], index * ROW_H, segments,
                        f"{(last - first).total_seconds():.2f} s" + (f" · {tries} attempts" if tries > 1 else "")))
    return Timeline(rows, span_s, LABEL_W + BAR_W + 8, len(rows) * ROW_H, len(found) - len(shown))
