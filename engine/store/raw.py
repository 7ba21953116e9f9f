"""One statement on a pooled connection's psycopg connection itself, retried once if it dropped.

The hot path (a worker's claim and commit, the API's poll) skips SQLAlchemy's per-execution
machinery, which was a third of a worker's CPU per node and a fifth of a poll's. Only atomic,
fenced statements and reads go through here: running one again on a new connection after a
dropped one (database restart, idle timeout) is safe.
"""
from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import RowFactory
from sqlalchemy import Engine

from engine import oplog


def execute_one(engine: Engine, pyformat: str, params: dict[str, Any], row_factory: RowFactory[Any],
                what: str) -> Any:
    """The statement's first row (None when it returns none), in its own transaction."""
    for attempt in (1, 2):
        fairy = engine.raw_connection()
        try:
            conn = fairy.driver_connection
            assert conn is not None  # a checked-out pool connection always has its driver connection
            conn.autocommit = True
            try:
                with conn.cursor(row_factory=row_factory) as cur:
                    cur.execute(pyformat, params)
                    # the result's field count, not `cur.description`: that builds a Column per column
                    # (a poll's 28: a twentieth of its time in the web process) to say the same
                    result = cur.pgresult
                    return cur.fetchone() if result is not None and result.nfields else None
            finally:
                if not conn.closed:
                    conn.autocommit = False
        except psycopg.OperationalError as exc:
            if getattr(fairy.driver_connection, "broken", False) or getattr(fairy.driver_connection, "closed", False):
                oplog.connection_lost("postgres", exc, f"retrying the {what}" if attempt == 1 else "giving up")
            fairy.invalidate()
            if attempt == 2:
                raise
        finally:
            fairy.close()
    raise AssertionError("unreachable")
