"""Read-side queries: runs and their nodes as clients see them, run lists, events."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from sqlalchemy import Engine

from engine.store.raw import execute_one
from engine.store.sql import gauges as gauge_sql
from engine.store.sql import reads as sql


class ViewStore:
    """SQL for reading runs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Reads are single statements: autocommit spares the BEGIN and ROLLBACK round trips
        # (under READ COMMITTED a transaction would give them no common snapshot anyway).
        self.reads = engine.execution_options(isolation_level="AUTOCOMMIT")

    def run_with_nodes(self, run_id: uuid.UUID, space_id: str | None,
                       reruns: int = 20) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """The run row (with its pending `interrupt` and newest `reruns` ids, at most `reruns`) and its
        node rows, in one statement; None if the space has no such run."""
        run = self._poll_row({"id": run_id, "space": space_id, "reruns": reruns})
        if run is None:
            return None
        nodes = run.pop("nodes") or []
        for node in nodes:
            for moment in ("started_at", "finished_at", "queued_at"):
                if node[moment] is not None:
                    node[moment] = datetime.fromisoformat(node[moment])
        run["reruns"] = [str(r) for r in run["reruns"]]
        return run, nodes

    def _poll_row(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """POLL_RUN on the pooled psycopg connection itself (engine/store/raw.py): a poll is the
        API's most frequent request. A read, so a dropped connection is retried once."""
        row: dict[str, Any] | None = execute_one(self.engine, sql.POLL_RUN.pyformat, params, dict_row, "read")
        return row

    def list_runs(self, space_id: str, workflow_id: str | None, status: str | None,
                  before: tuple[datetime, uuid.UUID] | None, limit: int,
                  parent: uuid.UUID | None = None, parent_node: str | None = None) -> list[dict[str, Any]]:
        """Runs of a space (the child runs of `parent`, of its node `parent_node`, if given), newest first,
        strictly older than the cursor `before`."""
        with self.reads.connect() as conn:
            rows = conn.execute(sql.LIST_RUNS.clause,
                {"space": space_id, "wf": workflow_id, "status": status, "parent": parent, "pnode": parent_node,
                 "b_at": before[0] if before else None, "b_id": before[1] if before else None,
                 "limit": limit}).mappings().all()
        return [dict(r) for r in rows]

    def run_ancestry(self, run_id: uuid.UUID) -> list[dict[str, Any]]:
        """The run's ancestors and the run itself, top run first: id, workflow_id, name, depth."""
        with self.reads.connect() as conn:
            return [dict(r) for r in conn.execute(sql.RUN_ANCESTRY.clause, {"run": run_id}).mappings()]

    def first_child_version(self, run_id: uuid.UUID, node_id: str) -> int | None:
        """The workflow version row of the node's first child run, if it started one."""
        with self.reads.connect() as conn:
            return conn.execute(sql.FIRST_CHILD_VERSION.clause, {"run": run_id, "node": node_id}).scalar()

    def child_outcomes(self, child_run_id: uuid.UUID) -> list[dict[str, Any]]:
        """Every child of the composite-node attempt that started `child_run_id`, in item order."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sql.CHILD_OUTCOMES.clause, {"child": child_run_id}).mappings()]

    def loop_iterations(self, run_id: uuid.UUID, node_id: str, first_epoch: int,
                        marks: list[str]) -> list[dict[str, Any]]:
        """The iterations of a loop node's attempt that began at `first_epoch`, in order (one query)."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sql.LOOP_ITERATIONS.clause, {
                "run": run_id, "node": node_id, "first_epoch": first_epoch, "marks": marks}).mappings()]

    def child_epoch(self, child_run_id: uuid.UUID) -> int | None:
        """The epoch of the parent node's attempt that started the child."""
        with self.engine.connect() as conn:
            found = conn.execute(sql.CHILD_EPOCH.clause, {"child": child_run_id}).scalar()
            return int(found) if found is not None else None

    def live_started_children(self, child_run_id: uuid.UUID) -> list[uuid.UUID]:
        """The live children of that attempt that have begun (ending them must cascade)."""
        with self.engine.connect() as conn:
            return list(conn.execute(sql.LIVE_STARTED_CHILDREN.clause, {"child": child_run_id}).scalars())

    def run_status(self, run_id: uuid.UUID, space_id: str | None = None) -> str | None:
        """Just the run's status (for waiters), or None if the space has no such run."""
        with self.reads.connect() as conn:
            return conn.execute(sql.RUN_STATUS.clause,
                {"id": run_id, "space": space_id}).scalar()

    def events_after(self, run_id: uuid.UUID, after_id: int, limit: int = 500) -> list[dict[str, Any]]:
        """The run's events with id > after_id, in order."""
        with self.reads.connect() as conn:
            rows = conn.execute(sql.EVENTS_AFTER.clause,
                {"run": run_id, "after": after_id, "limit": limit}).mappings().all()
        return [dict(r) for r in rows]

    def pending_interrupts(self, run_id: uuid.UUID) -> list[dict[str, Any]]:
        """The run's unanswered interrupts, oldest first (the order they are answered in)."""
        with self.reads.connect() as conn:
            rows = conn.execute(sql.PENDING_INTERRUPTS.clause,
                {"run": run_id}).mappings().all()
        return [dict(r) for r in rows]

    def interrupt(self, run_id: uuid.UUID, event_id: str) -> dict[str, Any] | None:
        """One interrupt of the run, answered or not."""
        with self.reads.connect() as conn:
            row = conn.execute(sql.GET_INTERRUPT.clause, {"run": run_id, "event": event_id}).mappings().first()
        return dict(row) if row else None

    def last_event_id(self, run_id: uuid.UUID) -> int:
        """The id of the run's newest event (0 if none)."""
        with self.reads.connect() as conn:
            return int(conn.execute(sql.LAST_EVENT_ID.clause,
                                    {"run": run_id}).scalar() or 0)

    def ping(self) -> None:
        """One round trip to prove the database answers."""
        with self.reads.connect() as conn:
            conn.execute(sql.PING.clause)

    def pending_counts(self) -> dict[str, int]:
        """Nodes by non-final status, for health and progress."""
        with self.reads.connect() as conn:
            rows = conn.execute(sql.PENDING_COUNTS.clause).all()
        return {r.status: r.n for r in rows}

    def queue_gauges(self, cap: int = 100_000) -> tuple[int, float]:
        """(queued nodes of live runs, at most `cap`; seconds the oldest of them has waited)."""
        with self.reads.connect() as conn:
            row = conn.execute(gauge_sql.QUEUE_GAUGES.clause, {"cap": cap}).one()
        return int(row.depth), float(row.oldest_age_s)

    def status_counts(self, space_id: str, workflow_id: str | None, since: datetime | None,
                      until: datetime | None) -> dict[str, int]:
        """Top-level runs of a space by status (the dashboard's summary), optionally of one workflow and time range."""
        with self.reads.connect() as conn:
            rows = conn.execute(sql.RUN_STATUS_COUNTS.clause,
                {"space": space_id, "wf": workflow_id, "since": since, "until": until}).all()
        return {r.status: int(r.n) for r in rows}

    def search_runs(self, space_id: str, pattern: str, workflow_id: str | None, status: str | None,
                    since: datetime | None, before: tuple[datetime, uuid.UUID] | None, scan: int,
                    limit: int) -> list[dict[str, Any]]:
        """Runs among the `scan` newest of the range whose inputs match the ILIKE `pattern` (`hit`), and the
        oldest run scanned (`hit` false), each with how many were `scanned`."""
        with self.reads.connect() as conn:
            rows = conn.execute(sql.SEARCH_RUNS.clause,
                {"space": space_id, "pattern": pattern, "wf": workflow_id, "status": status, "since": since,
                 "b_at": before[0] if before else None, "b_id": before[1] if before else None,
                 "scan": scan, "limit": limit}).mappings().all()
        return [dict(r) for r in rows]

    def run_waits(self, run_id: uuid.UUID) -> list[dict[str, Any]]:
        """Each question or form a run asked: node, asked at, answered at (None: still waiting)."""
        with self.reads.connect() as conn:
            return [dict(r) for r in conn.execute(sql.RUN_WAITS.clause, {"id": run_id}).mappings().all()]
