"""Test databases reused from test to test: emptied when a test ends, not dropped.

Cloning the migrated template (CREATE DATABASE … TEMPLATE) and dropping the clone cost 0.5-3 s
per test on this machine, more than most tests take: DROP DATABASE forces a checkpoint. So a
test's database goes back to a per-session pool instead. Before the next test gets it, every
other connection to it is ended, every row of every table but `alembic_version` is deleted,
its sequences restarted, and its statistics reset (a test reads `pg_stat_user_tables`), so
it is what a fresh clone would be: the migrated schema, no rows. A database whose schema
differs from the template's when its test ends (a migration test stopped half-way down, say)
is dropped instead, and so is one this role may not reset.
"""
from __future__ import annotations

import time
import uuid

import psycopg
from psycopg import sql

# Names, definitions and the migration version: equal for two databases with the same schema.
SCHEMA_FINGERPRINT = """
SELECT md5(string_agg(item, E'\\n' ORDER BY item)) FROM (
    SELECT format('column %s.%s %s %s %s', table_name, column_name, data_type, column_default, is_nullable)
      FROM information_schema.columns WHERE table_schema = 'public'
    UNION ALL SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
    UNION ALL SELECT format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
      FROM pg_constraint WHERE connamespace = 'public'::regnamespace
    UNION ALL SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL SELECT 'function ' || pg_get_functiondef(oid) FROM pg_proc WHERE pronamespace = 'public'::regnamespace
    UNION ALL SELECT 'type ' || typname FROM pg_type WHERE typnamespace = 'public'::regnamespace
    UNION ALL SELECT 'version ' || version_num FROM alembic_version
) AS schema_items(item)
"""
OTHER_BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"


def with_db(url: str, name: str) -> str:
    """`url` (a libpq URL) pointing at database `name`."""
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


class DatabasePool:
    """Clones of one migrated template for this session's tests, handed out one per test."""

    def __init__(self, admin_url: str, template: str) -> None:
        self.admin_url = admin_url
        self.template = template
        self.free: list[str] = []
        with psycopg.connect(with_db(admin_url, template), autocommit=True) as conn:
            self.fingerprint = self._fingerprint(conn)

    def acquire(self) -> str:
        """A database with the migrated schema and no rows, for one test."""
        if self.free:
            return self.free.pop()
        name = f"rf_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(self.template)))
        return name

    def release(self, name: str) -> None:
        """Take a test's database back: emptied for the next test, or dropped if that cannot be done."""
        try:
            reusable = self._reset(name)
        except psycopg.Error:
            reusable = False
        if reusable:
            self.free.append(name)
        else:
            self._drop(name)

    def close(self) -> None:
        """Drop every pooled database (end of the session)."""
        while self.free:
            self._drop(self.free.pop())

    def _reset(self, name: str) -> bool:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            # what the test left connected (its killed workers' backends may still be closing)
            admin.execute(f"SELECT pg_terminate_backend(pid) FROM ({OTHER_BACKENDS}) AS others", (name,))
            deadline = time.monotonic() + 10
            while admin.execute(OTHER_BACKENDS, (name,)).fetchone() is not None:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)
        with psycopg.connect(with_db(self.admin_url, name), autocommit=True) as conn:
            if self._fingerprint(conn) != self.fingerprint:
                return False
            tables = [row[0] for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")]
            sequences = [row[0] for row in conn.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")]
            with conn.transaction():
                # DELETE, not TRUNCATE: a few rows go in milliseconds, while TRUNCATE makes new files
                # for every table and index (0.3-0.6 s). The replica role skips the foreign keys
                # and triggers (every row goes); nothing waits for this commit to reach the disk.
                conn.execute("SET LOCAL session_replication_role = replica")
                conn.execute("SET LOCAL synchronous_commit = off")
                deleted = [table for table in tables
                           if conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table))).rowcount > 0]
                for sequence in sequences:
                    conn.execute(sql.SQL("ALTER SEQUENCE {} RESTART").format(sql.Identifier(sequence)))
            if deleted:  # the reset below hides the dead rows from autovacuum: they go now
                conn.execute(sql.SQL("VACUUM {}").format(sql.SQL(", ").join(sql.Identifier(t) for t in deleted)))
            # this backend's own counts (the deletes) are published first, then every count zeroed
            conn.execute("SELECT pg_stat_force_next_flush()")
            conn.execute("SELECT pg_stat_reset()")
        return True

    @staticmethod
    def _fingerprint(conn: psycopg.Connection[tuple[str]]) -> str | None:
        try:
            row = conn.execute(SCHEMA_FINGERPRINT).fetchone()
        except psycopg.errors.UndefinedTable:  # no alembic_version: not a migrated schema
            return None
        return row[0] if row else None

    def _drop(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
