"""Every SQL statement of engine/store/sql/ is valid against the migrated schema, and the
status columns refuse a status that is not one of engine/statuses.py's."""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import psycopg
import pytest

from engine.store.sql import all_statements

pytestmark = pytest.mark.integration

_NAMED_PARAM = re.compile(r"(?<![:\w]):(\w+)")


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _positional(sql: str) -> str:
    """`:name` → `$n` (numbered by first use), as PREPARE wants."""
    numbers: dict[str, int] = {}
    return _NAMED_PARAM.sub(lambda m: f"${numbers.setdefault(m.group(1), len(numbers) + 1)}", sql)


def test_every_statement_prepares_against_the_migrated_schema(database_url: str) -> None:
    # Given the migrated schema and every named statement
    statements = all_statements()
    assert len(statements) > 50
    failures = {}
    with psycopg.connect(_libpq(database_url), autocommit=True) as conn:
        for number, (name, statement) in enumerate(sorted(statements.items())):
            # When each is prepared (parsed, analysed and planned, not run)
            try:
                conn.execute(f"PREPARE s{number} AS {_positional(statement.sql)}")
            except psycopg.Error as exc:
                failures[name] = str(exc).splitlines()[0]
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    # Then Postgres accepts every one of them
    assert failures == {}
    assert prepared is not None and prepared[0] == len(statements)


def _insert_run(conn: psycopg.Connection, status: str) -> uuid.UUID:
    conn.execute("INSERT INTO spaces (id, name) VALUES ('s', 's') ON CONFLICT DO NOTHING")
    conn.execute("INSERT INTO workflows (id, space_id, name, latest_version) VALUES ('wf', 's', 'wf', 1) "
                 "ON CONFLICT DO NOTHING")
    row = conn.execute("INSERT INTO workflow_versions (workflow_id, version, definition) VALUES ('wf', 1, '{}') "
                       "ON CONFLICT (workflow_id, version) DO UPDATE SET version = 1 RETURNING id").fetchone()
    assert row is not None
    run_id = uuid.uuid4()
    conn.execute("INSERT INTO runs (id, space_id, workflow_id, version_id, version, status, inputs, remaining) "
                 "VALUES (%s, 's', 'wf', %s, 1, %s, '{}', 1)", [run_id, row[0], status])
    return run_id


def _insert_node(conn: psycopg.Connection, status: str) -> None:
    run_id = _insert_run(conn, "running")
    conn.execute("INSERT INTO node_runs (run_id, node_id, status, in_degree, join_any, pending_in, active_in) "
                 "VALUES (%s, 'a', %s, 0, false, 0, 0)", [run_id, status])


def _insert_interrupt(conn: psycopg.Connection, status: str) -> None:
    run_id = _insert_run(conn, "interrupted")
    conn.execute("INSERT INTO run_interrupts (event_id, run_id, node_id, type, data, status) "
                 "VALUES (%s, %s, 'a', 'question', '{}', %s)", [uuid.uuid4().hex, run_id, status])


@pytest.mark.parametrize(("table", "insert", "good"), [
    ("runs", _insert_run, "interrupted"),
    ("node_runs", _insert_node, "retrying"),
    ("run_interrupts", _insert_interrupt, "answered"),
])
def test_a_status_column_refuses_a_status_that_is_not_one(database_url: str, table: str,
                                                          insert: Callable[[psycopg.Connection, str], object],
                                                          good: str) -> None:
    with psycopg.connect(_libpq(database_url), autocommit=True) as conn:
        # Given a row with a real status is stored
        insert(conn, good)
        # When a row with a made-up status is inserted
        with pytest.raises(psycopg.errors.CheckViolation) as refused:
            insert(conn, "finished")
    # Then the table's CHECK constraint refuses it, by name
    assert refused.value.diag.constraint_name == f"ck_{table}_status"
    assert refused.value.diag.table_name == table
