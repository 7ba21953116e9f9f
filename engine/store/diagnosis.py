"""Storage of the worker registry and of a run's diagnosis facts (SQL: engine/store/sql/diagnosis.py)."""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from engine.diagnosis import RunFacts
from engine.store.sql import diagnosis as sql

NODE_LIMIT = 5000  # node rows read per diagnosis (a definition has far fewer nodes)
ASK_LIMIT = 100  # pending interrupts read per diagnosis
CHILDREN_PER_NODE = 5  # live child runs named per composite node


class DiagnosisStore:
    """The `workers` table and the reads of a run's diagnosis."""

    def __init__(self, engine: Engine) -> None:
        self.auto = engine.execution_options(isolation_level="AUTOCOMMIT")

    # -- worker registry ------------------------------------------------------------------------
    def beat(self, worker_id: str, host: str, pid: int, queues: Sequence[str]) -> None:
        """Register the worker process, or refresh its heartbeat (one statement)."""
        with self.auto.connect() as conn:
            conn.execute(sql.BEAT_WORKER.clause, {"id": worker_id, "host": host, "pid": pid, "queues": list(queues)})

    def drop(self, worker_id: str) -> None:
        """Remove the worker's row (a clean stop)."""
        with self.auto.connect() as conn:
            conn.execute(sql.DROP_WORKER.clause, {"id": worker_id})

    def purge(self, older_than_s: float) -> int:
        """Remove the rows of workers silent for longer than `older_than_s`; how many."""
        with self.auto.connect() as conn:
            return int(conn.execute(sql.PURGE_WORKERS.clause, {"age_s": older_than_s}).rowcount or 0)

    def live_workers(self, stale_s: float, limit: int = 200) -> list[dict[str, Any]]:
        """Workers whose heartbeat is fresher than `stale_s`, newest first."""
        with self.auto.connect() as conn:
            return [dict(r) for r in conn.execute(sql.LIVE_WORKERS.clause,
                                                  {"stale_s": stale_s, "limit": limit}).mappings()]

    # -- diagnosis ------------------------------------------------------------------------------
    def facts(self, run_id: uuid.UUID, space_id: str | None, queue: str, stale_s: float) -> RunFacts | None:
        """The run (None if the space has no such run), its node rows, pending interrupts and live children."""
        with self.auto.connect() as conn:
            run = conn.execute(sql.RUN_FACTS.clause, {"run": run_id, "space": space_id, "queue": queue,
                                                      "stale_s": stale_s}).mappings().first()
            if run is None:
                return None
            nodes = [dict(r) for r in conn.execute(sql.NODE_FACTS.clause, {"run": run_id, "limit": NODE_LIMIT})
                     .mappings()]
            asks = [dict(r) for r in conn.execute(sql.PENDING_ASKS.clause, {"run": run_id, "limit": ASK_LIMIT})
                    .mappings()]
            children: dict[str, list[dict[str, Any]]] = {}
            if any(n["status"] == "delegated" for n in nodes):
                for row in conn.execute(sql.LIVE_CHILDREN.clause, {"run": run_id, "per_node": CHILDREN_PER_NODE}):
                    children.setdefault(row.node_id, []).append(
                        {"run_id": str(row.id), "status": row.status, "item_index": row.item_index,
                         "started_at": row.started_at})
        return RunFacts(dict(run), nodes, asks, children)
