"""The operations log: one line per run and node transition, per reconciler repair, per lost connection.

One function per event, so each call site is one line and every line of an event carries the
same keys (docs/operations.md "Logs" lists them): `event`, and `run_id`, `node_id`, `attempt`,
`space_id` where they apply (`trace_id` too when traces are exported, engine/telemetry.py).
Texts logged here are ones already stored in the node's error (scrubbed of the registry's
secrets where they are made, engine/models/calling.py); the formatter (engine/logfmt.py) masks
anything key-shaped again. Nothing here configures logging: the entry points do.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any

node_log = logging.getLogger("relayflow.node")
run_log = logging.getLogger("relayflow.run")
repair_log = logging.getLogger("relayflow.reconciler")
connection_log = logging.getLogger("relayflow.connection")
retention_log = logging.getLogger("relayflow.retention")


def run_started(run_id: uuid.UUID | str, space_id: str | None, node_id: str, **ids: Any) -> None:
    """The run's first node was claimed: the run is running (`node_id`: that node)."""
    if not run_log.isEnabledFor(logging.INFO):  # transition lines are per node: skip building them
        return
    run_log.info("run started", extra={"event": "run.started", "run_id": str(run_id), "space_id": space_id,
                                       "node_id": node_id, **ids})


def run_ended(run_id: uuid.UUID | str, status: str, space_id: str | None, error: dict[str, Any] | None,
              **ids: Any) -> None:
    """The run ended (`status`: succeeded, failed, cancelled) or waits for a person (interrupted)."""
    level = logging.WARNING if status == "failed" else logging.INFO
    if not run_log.isEnabledFor(level):
        return
    run_log.log(level, f"run {status}", extra={
        "event": f"run.{status}", "run_id": str(run_id), "space_id": space_id,
        **({"code": error.get("code"), "node_id": error.get("node_id")} if error else {}), **ids})


def node_started(run_id: uuid.UUID | str, node_id: str, attempt: int, space_id: str | None, node_type: str,
                 resumed: bool, **ids: Any) -> None:
    """A worker claimed the node: an attempt starts (or a resumed node finishes its attempt)."""
    if not node_log.isEnabledFor(logging.INFO):
        return
    node_log.info("node started", extra={
        "event": "node.resumed" if resumed else "node.started", "run_id": str(run_id), "node_id": node_id,
        "attempt": attempt, "space_id": space_id, "node_type": node_type, **ids})


def node_settled(event: str, run_id: uuid.UUID | str, node_id: str, attempt: int, space_id: str | None,
                 **details: Any) -> None:
    """An attempt ended without failing: `node.succeeded`, `node.interrupted` (asked a person) or
    `node.delegated` (waits for its child runs)."""
    if not node_log.isEnabledFor(logging.INFO):
        return
    node_log.info(event.replace(".", " "), extra={"event": event, "run_id": str(run_id), "node_id": node_id,
                                                  "attempt": attempt, "space_id": space_id, **details})


def nodes_skipped(run_id: uuid.UUID | str, node_ids: Any, **ids: Any) -> None:
    """Nodes no active edge reaches any more were skipped."""
    if not node_ids or not node_log.isEnabledFor(logging.INFO):
        return
    for node_id in node_ids:
        node_log.info("node skipped", extra={"event": "node.skipped", "run_id": str(run_id), "node_id": node_id,
                                             **ids})


def node_failure(run_id: uuid.UUID | str, node_id: str, attempt: int, space_id: str | None,
                 error: dict[str, Any], outcome: str, **details: Any) -> None:
    """One attempt of a node failed; `outcome` says what follows (retry_scheduled, run_failed,
    continued (on_error default/branch), or superseded: another attempt owns the node now)."""
    level = logging.WARNING if outcome in ("retry_scheduled", "superseded") else logging.ERROR
    node_log.log(level, "node attempt failed", extra={
        "event": "node.failed" if outcome != "retry_scheduled" else "node.retry_scheduled",
        "run_id": str(run_id), "node_id": node_id, "attempt": attempt, "space_id": space_id,
        "outcome": outcome, **details, "code": error.get("code"), "kind": error.get("kind"),
        "error": error.get("message")})


def lease_expired(row: Any, outcome: str, max_crashes: int) -> None:
    """A running node's lease expired (its worker died or stalled): re-queued, or failed as crashed."""
    repair_log.warning("node lease expired", extra={
        "event": "repair.lease_expired", "run_id": str(row.run_id), "node_id": row.node_id,
        "attempt": row.attempts, "space_id": row.space_id, "crashes": row.crashes + 1,
        "max_crashes": max_crashes, "outcome": outcome})


def message_resent(run_id: uuid.UUID | str, node_id: str, status: str) -> None:
    """A queued node's message (or a due retry's) looked lost and was sent again."""
    repair_log.warning("message re-sent", extra={
        "event": "repair.retry_fired" if status == "retrying" else "repair.message_resent",
        "run_id": str(run_id), "node_id": node_id, "status": status})


def waiter_woken(run_id: uuid.UUID | str, node_id: str) -> None:
    """A node waiting for its space's free slot was sent by the sweep (its wake-up was lost)."""
    repair_log.info("waiting node woken", extra={"event": "repair.waiter_woken", "run_id": str(run_id),
                                                 "node_id": node_id})


def decision_completed(run_id: uuid.UUID | str, what: str, node_id: str | None = None) -> None:
    """A decision a dying worker left half done was completed (`what`: skip_signalled, run_finished)."""
    repair_log.warning("interrupted decision completed", extra={
        "event": f"repair.{what}", "run_id": str(run_id), "node_id": node_id})


def run_deadline(run_id: uuid.UUID | str, node_id: str | None = None) -> None:
    """A run passed its deadline and was failed."""
    repair_log.warning("run past its deadline failed", extra={
        "event": "run.deadline_exceeded", "run_id": str(run_id), "node_id": node_id})


def connection_lost(service: str, error: BaseException | str, action: str) -> None:
    """A connection to PostgreSQL or Redis broke; `action` says what the process does about it."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    connection_log.warning("connection lost", extra={
        "event": f"{service}.connection_lost", "service": service, "error": text, "action": action})


def retention_deleted(deleted: Any, elapsed_ms: float) -> None:
    """One retention batch deleted expired runs (engine/retention.py): the rows it removed, by table."""
    retention_log.info("expired runs deleted", extra={
        "event": "retention.deleted", "roots": deleted.roots, "runs": deleted.runs, "nodes": deleted.nodes,
        "events": deleted.events, "interrupts": deleted.interrupts, "waiters": deleted.waiters,
        "elapsed_ms": round(elapsed_ms, 1)})
