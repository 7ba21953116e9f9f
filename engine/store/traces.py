"""Reads of tracing: what a run's span says, and the top run whose id is the trace's."""
from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Engine

from engine.store.sql import traces as sql


class TraceStore:
    """SQL read by engine/telemetry.py, only when traces are exported."""

    def __init__(self, engine: Engine) -> None:
        self.reads = engine.execution_options(isolation_level="AUTOCOMMIT")

    def run_trace(self, run_id: uuid.UUID) -> dict[str, Any] | None:
        """The run's workflow, space, status, error, times, parent and top run id; None if it is gone."""
        with self.reads.connect() as conn:
            row = conn.execute(sql.RUN_TRACE.clause, {"run": run_id}).mappings().first()
            return dict(row) if row is not None else None
