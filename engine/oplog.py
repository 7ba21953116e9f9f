"""The operations log: one line per node failure, per reconciler repair, per lost connection.

One function per event, so each call site is one line and every line of an event carries the
same keys (docs/operations.md lists them). Texts logged here are ones already stored in the
node's error (scrubbed of the registry's secrets where they are made, engine/models/calling.py);
the formatter (engine/logfmt.py) masks anything key-shaped again. Nothing here configures
logging: the entry points do.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any

node_log = logging.getLogger("relayflow.node")
repair_log = logging.getLogger("relayflow.reconciler")
connection_log = logging.getLogger("relayflow.connection")
retention_log = logging.getLogger("relayflow.retention")


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
