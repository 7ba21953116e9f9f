"""How a node attempt ends, and what settling it writes. No I/O.

An attempt ends in one `Outcome` (engine/executor.py settles each with its own handler); a
settled node sends its successors signals (`merge_signals`) and, when it succeeded, a
`node.succeeded` event (`succeeded_event`), both committed with the node.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from engine.compiler import CompiledNode, SuccessorSignal
from engine.errors import NodeError
from engine.store import Signal


@dataclass(frozen=True)
class Succeeded:
    """The node returned its outputs (and, for a branching type, the port it chose)."""

    outputs: dict[str, Any]
    port: str | None
    report: dict[str, Any]


@dataclass(frozen=True)
class Interrupted:
    """The node asked a person (a question, a form): the run waits, holding no worker."""

    kind: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Failed:
    """The attempt failed: it is retried, or the node's `on_error` decides what follows."""

    error: NodeError
    report: dict[str, Any]


@dataclass(frozen=True)
class Delegated:
    """A composite node inserted child runs (their roots waiting): the node waits for them holding
    no worker, lease or slot; the first `concurrency` start when it is parked, each child's end
    starts the next, and the last one's end (or, with `fail_fast`, the first failure) queues it again."""

    total: int
    concurrency: int  # 0: all at once
    fail_fast: bool
    child_run_ids: tuple[uuid.UUID, ...]  # sub-workflow children (a batch's items are listed by parent)
    first_index: int = 0  # the first child's item index (a loop's iteration number)
    state: dict[str, Any] | None = None  # kept with the node while it waits (a loop's counters and variables)


# How an attempt ended; `Executor._settle` has one handler per type (`assert_never` makes a
# forgotten one a type error).
Outcome = Succeeded | Interrupted | Failed | Delegated


def succeeded_event(node: CompiledNode, attempt: int, port: str | None, outputs: dict[str, Any]) -> dict[str, Any]:
    """Data of a `node.succeeded` event; a message node's content rides along, committed with the node."""
    data: dict[str, Any] = {"attempt": attempt, "port": port} if port else {"attempt": attempt}
    if node.node_type.event_output is not None:
        data["message"] = {"content": outputs.get(node.node_type.event_output)}
    return data


def merge_signals(signals: Iterable[SuccessorSignal]) -> list[Signal]:
    """Aggregate per-edge signals into one per successor, sorted (a stable lock order)."""
    merged: dict[str, list[Any]] = {}
    for s in signals:
        entry = merged.setdefault(s.node_id, [s.in_degree, 0, 0, s.join_any])
        entry[1] += 1
        entry[2] += int(s.active)
    return [Signal(node_id, deg, cnt, act, any_) for node_id, (deg, cnt, act, any_) in sorted(merged.items())]
