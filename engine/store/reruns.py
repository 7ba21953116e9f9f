"""Reruns' storage: read a source run's outcomes, insert a rerun in one statement, lineage reads."""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from engine.store.lifecycle import dumps
from engine.store.sql import reruns as sql

if TYPE_CHECKING:
    from engine.rerun_plan import FrontierRow


@dataclass(frozen=True)
class NewRerun:
    """A rerun to insert: the reused node ids and the frontier rows of its plan."""

    run_id: uuid.UUID
    space_id: str
    source_run_id: uuid.UUID
    from_node: str
    inputs: dict[str, Any] | None  # None: the source's inputs
    overrides: dict[str, Any] | None
    reused: Sequence[str]
    frontier: Sequence[FrontierRow]
    remaining: int
    deadline_s: float | None
    idempotency_key: str | None = None  # a bulk rerun's (source and range)


class RerunStore:
    """SQL of reruns, over an autocommit engine (each statement is its own transaction)."""

    def __init__(self, engine: Engine) -> None:
        self.auto = engine.execution_options(isolation_level="AUTOCOMMIT")

    def source(self, run_id: uuid.UUID, space_id: str) -> dict[str, Any] | None:
        """The run as a rerun's source, or None if the space has no such run."""
        with self.auto.connect() as conn:
            row = conn.execute(sql.SOURCE_RUN.clause, {"id": run_id, "space": space_id}).mappings().first()
        return dict(row) if row else None

    def outcomes(self, run_id: uuid.UUID) -> list[Any]:
        """The source's node rows: node_id, status, port, settled."""
        with self.auto.connect() as conn:
            return list(conn.execute(sql.SOURCE_OUTCOMES.clause, {"run": run_id}))

    def insert(self, new: NewRerun) -> bool:
        """Insert the rerun (run, reused rows, frontier, event) in one statement; False if nothing was
        inserted (the source is gone, not final any more, or a bulk call of this range reran it)."""
        frontier = list(new.frontier)
        with self.auto.connect() as conn:
            row = conn.execute(sql.INSERT_RERUN.clause, {
                "id": new.run_id, "space": new.space_id, "source": new.source_run_id, "from_node": new.from_node,
                "inputs": dumps(new.inputs), "overrides": dumps(new.overrides), "key": new.idempotency_key,
                "remaining": new.remaining, "deadline_s": new.deadline_s, "reused": list(new.reused),
                "f_ids": [f.node_id for f in frontier], "f_status": [str(f.status) for f in frontier],
                "f_deg": [f.in_degree for f in frontier], "f_any": [f.join_any for f in frontier],
                "f_pending": [f.pending_in for f in frontier], "f_act": [f.active_in for f in frontier],
                "f_settled": [f.status == "skipped" for f in frontier],
                "event_data": dumps({"source_run_id": str(new.source_run_id), "rerun_from": new.from_node,
                                     "reused": len(new.reused)})}).first()
        return row is not None

    def reruns_of(self, run_id: uuid.UUID, space_id: str, limit: int = 20) -> list[str]:
        """The newest reruns of a run (ids), newest first, at most `limit`."""
        with self.auto.connect() as conn:
            return [str(r) for r in conn.execute(sql.RERUNS_OF.clause,
                                                 {"run": run_id, "space": space_id, "limit": limit}).scalars()]

    def list_reruns(self, space_id: str, source: uuid.UUID, status: str | None,
                    before: tuple[datetime, uuid.UUID] | None, limit: int) -> list[dict[str, Any]]:
        """A source's reruns, newest first, strictly older than the cursor `before`."""
        with self.auto.connect() as conn:
            rows = conn.execute(sql.LIST_RERUNS.clause, {
                "space": space_id, "source": source, "status": status, "b_at": before[0] if before else None,
                "b_id": before[1] if before else None, "limit": limit}).mappings().all()
        return [dict(r) for r in rows]

    def bulk_sources(self, space_id: str, workflow_id: str, statuses: Sequence[str], since: datetime,
                     until: datetime, key_prefix: str, again: bool, limit: int) -> list[dict[str, Any]]:
        """Ended top-level runs of the workflow to rerun in bulk, oldest first, at most `limit`."""
        with self.auto.connect() as conn:
            rows = conn.execute(sql.BULK_SOURCES.clause, {
                "space": space_id, "wf": workflow_id, "statuses": list(statuses), "since": since, "until": until,
                "key_prefix": key_prefix, "again": again, "limit": limit}).mappings().all()
        return [dict(r) for r in rows]
