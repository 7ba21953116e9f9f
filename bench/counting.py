"""Accounting per node: PostgreSQL round trips (libpq trace), WAL, CPU (/proc), and a CPU profile
grouped by package. Live monitors (Redis commands, wait events) are in `bench/monitors.py`.

A round trip ends where the client waits for the server: a simple `Query`, or a `Sync` that
closes an extended-protocol batch (Parse/Bind/Describe/Execute). So pool pings, BEGIN, COMMIT,
ROLLBACK and psycopg's own prepares all count, whichever layer (SQLAlchemy or raw psycopg) sent them.
"""
from __future__ import annotations

import cProfile
import os
import pstats
import re
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import by_count

CLK_TCK = os.sysconf("SC_CLK_TCK")

# -- PostgreSQL round trips ---------------------------------------------------------------------------
_TRACE_LINE = re.compile(r"^([FB])\t(\d+)\t(\w+)\t?(.*)$")
_PARSE = re.compile(r'^"([^"]*)" "(.*)$', re.DOTALL)
_BIND = re.compile(r'^"[^"]*" "([^"]*)"')
# Distinctive text of each statement (engine/store/sql/: its CTE names or event types).
_RULES = (
    ("AS read_at", "PEEK_UNCLAIMED"), ("AS starting", "COMMIT_UNCLAIMED"),
    ("'node.started'", "CLAIM"), ("'node.retrying'", "SCHEDULE_RETRY"), ("failed_node AS (", "FAIL_RUN_AT_NODE"),
    ("decided_node AS (", "COMMIT_NODE"), ("settled_skip AS (", "PROPAGATE_SKIP"), ("'run.succeeded'", "FINISH_RUN"),
    ("AS outputs", "load_outputs"), ("INSERT INTO runs", "INSERT_RUN"), ("INSERT INTO node_runs", "insert root nodes"),
    ("'run.queued'", "insert run.queued event"), ("SELECT v.id, v.workflow_id", "get version"),
    ("FROM workflow_versions", "get version by id"), ("SELECT status FROM runs", "run_status"),
    ("INSERT INTO bench_steps", "naive INSERT"),
)
PING = "pool pre-ping ';'"
NOT_STATEMENTS = {PING, "BEGIN", "COMMIT", "ROLLBACK", "DEALLOCATE"}


def classify_sql(sql: str) -> str:
    """A short name for a statement, by its distinctive text."""
    s = " ".join(sql.split())
    for needle, name in _RULES:
        if needle in s:
            return name
    return s[:60]


def _records(text: str) -> Iterator[tuple[str, int, str, str]]:
    """(direction, length, message, body) of a PQtrace file; bodies may span lines."""
    current: list[Any] | None = None
    for line in text.splitlines():
        m = _TRACE_LINE.match(line)
        if m:
            if current:
                yield current[0], current[1], current[2], current[3]
            current = [m.group(1), int(m.group(2)), m.group(3), m.group(4)]
        elif current is not None:
            current[3] += "\n" + line
    if current:
        yield current[0], current[1], current[2], current[3]


class LibpqTracer:
    """Traces every protocol message of the connections of some engines to files, then counts them.

    Run the warm-up traced too: psycopg prepares a statement at its 5th execution, and later
    executions name it only by its prepared name, which the tracer learns from the Parse.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.connections: list[Any] = []
        self.active: list[tuple[Any, Path]] = []
        self.prepared: dict[int, dict[str, str]] = {}  # per connection: prepared statement name → kind
        self.tracing = False
        self._n = 0
        self._engines: list[Any] = []

    def watch(self, engine: Any) -> None:
        """Trace this engine's connections; its pool is emptied, so every connection is a new one."""
        from sqlalchemy import event

        engine.dispose()
        event.listen(engine, "connect", self._on_connect)
        self._engines.append(engine)

    def unwatch(self) -> None:
        from sqlalchemy import event

        for engine in self._engines:
            event.remove(engine, "connect", self._on_connect)
        self._engines = []

    def backend_pids(self) -> set[int]:
        return {c.info.backend_pid for c in self.connections if not c.closed}

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        self.connections.append(dbapi_connection)
        if self.tracing:
            self._trace(dbapi_connection)

    def _trace(self, conn: Any) -> None:
        self._n += 1
        path = self.workdir / f"trace{self._n}.txt"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        conn.pgconn.trace(fd)  # libpq owns the FILE* from now on; untrace() flushes it
        conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE)
        self.active.append((conn, path))

    def start(self) -> None:
        self.tracing = True
        for conn in self.connections:
            if not conn.closed:
                self._trace(conn)

    def stop(self) -> dict[str, Any]:
        """Stop tracing; count round trips by kind, statements and bytes sent."""
        self.tracing = False
        for conn, _ in self.active:
            if not conn.closed:
                conn.pgconn.untrace()
        traced, self.active = self.active, []
        counts: dict[str, int] = {}
        sent_bytes = 0
        for conn, path in traced:
            prepared = self.prepared.setdefault(id(conn), {})
            pending: str | None = None
            for kind, length, message, body in _records(path.read_text(errors="replace")):
                if kind != "F":
                    continue
                body = body.lstrip(" ")
                sent_bytes += length
                if message == "Query":
                    text = body.strip().strip('"')
                    name = PING if text == ";" else (text.split(" ")[0].upper() if text else text)
                    counts[name] = counts.get(name, 0) + 1
                elif message == "Parse":
                    m = _PARSE.match(body)
                    pending = classify_sql(m.group(2) if m else body)
                    if m and m.group(1):  # psycopg prepares in a round trip of its own (Parse, Sync)
                        prepared[m.group(1)] = pending
                        pending = f"prepare {pending}"
                elif message == "Bind" and pending is None:
                    m = _BIND.match(body)
                    pending = prepared.get(m.group(1), "prepared ?") if m else "prepared ?"
                elif message == "Sync":
                    counts[pending or "Sync"] = counts.get(pending or "Sync", 0) + 1
                    pending = None
            path.unlink(missing_ok=True)
        statements = sum(v for k, v in counts.items() if k not in NOT_STATEMENTS and not k.startswith("prepare "))
        return {"round_trips": sum(counts.values()), "statements": statements,
                "by_kind": dict(by_count(counts)), "bytes_sent": sent_bytes}


def per_unit(trace: dict[str, Any], units: int) -> dict[str, Any]:
    """A trace count divided by nodes (or steps)."""
    return {"round_trips": round(trace["round_trips"] / units, 3), "statements": round(trace["statements"] / units, 3),
            "bytes_sent": round(trace["bytes_sent"] / units),
            "by_kind": {k: round(v / units, 3) for k, v in trace["by_kind"].items()}}


# -- CPU, WAL --------------------------------------------------------------------------------------------
def sched_ns(pid: int) -> int:
    """Nanoseconds a single-threaded process (a Postgres backend) has run on a CPU."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return 0


def wal_lsn(conn: Any) -> int:
    """The server's WAL insert position, in bytes (server-wide)."""
    return int(conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'").fetchone()[0])  # type: ignore[index]


def wal_by_relation(conn: Any, start: int, end: int) -> dict[str, int] | None:
    """WAL bytes between two positions by the relation each record touches (pg_walinspect; None if
    unavailable). Records without a block (commits) go by record type; other databases' as "other"."""
    try:
        rows = conn.execute("""
            WITH w AS (
                SELECT w.record_length AS len, w.resource_manager || ' ' || w.record_type AS kind,
                       regexp_match(w.block_ref, 'rel \\d+/(\\d+)/(\\d+)') AS ref
                  FROM pg_get_wal_records_info('0/0'::pg_lsn + %s::numeric,
                                               least('0/0'::pg_lsn + %s::numeric, pg_current_wal_flush_lsn())) w)
            SELECT CASE WHEN w.ref IS NULL THEN w.kind
                        WHEN w.ref[1]::oid <> (SELECT oid FROM pg_database WHERE datname = current_database())
                        THEN 'other databases'
                        ELSE coalesce(c.relname, 'relfilenode ' || w.ref[2]) END, sum(w.len)::bigint
              FROM w LEFT JOIN pg_class c ON c.relfilenode = w.ref[2]::oid
             GROUP BY 1""", (start, end)).fetchall()
    except psycopg.Error:
        return None
    return dict(by_count({name: int(total) for name, total in rows}))


def _cpu_s(pid: int) -> float | None:
    """utime + stime of a process, exited threads included (Linux keeps the sum equal to the
    scheduler's precise runtime; only the user/system split is sampled)."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def _machine() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / CLK_TCK, sum(fields) / CLK_TCK


class CpuMeter:
    """CPU seconds used by groups of processes (workers, PostgreSQL, Redis, this driver) over a window."""

    def __init__(self, groups: dict[str, Callable[[], set[int]]]) -> None:
        self.groups = groups

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {"machine": _machine(), "at": time.monotonic()}
        for name, pids in self.groups.items():
            snap[name] = {pid: cpu for pid in pids() if (cpu := _cpu_s(pid)) is not None}
        return snap

    def delta(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        out = {name: round(sum(cpu - before[name].get(pid, 0.0) for pid, cpu in after[name].items()), 3)
               for name in self.groups}
        busy, total = after["machine"][0] - before["machine"][0], after["machine"][1] - before["machine"][1]
        out["machine_busy_pct"] = round(100.0 * busy / total, 1) if total > 0 else 0.0
        out["wall_s"] = round(after["at"] - before["at"], 3)
        return out


# -- CPU by package (in process) ----------------------------------------------------------------------------
_STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()


def _package(filename: str, root: Path) -> str | None:
    """The package a code file belongs to; None for built-ins (C functions)."""
    if filename.startswith(("~", "<")):
        return None
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        name = parts[parts.index("site-packages") + 1].removesuffix(".py")
        return "psycopg" if name.startswith("psycopg") else name
    try:
        rel = path.resolve().relative_to(root)
        return rel.parts[0] if len(rel.parts) > 1 else rel.stem
    except ValueError:
        pass
    try:
        return "stdlib " + path.resolve().relative_to(_STDLIB).parts[0].removesuffix(".py")
    except ValueError:
        return "other"


def profile_by_package(work: Callable[[], None], root: Path) -> dict[str, float]:
    """This thread's CPU during `work`, as shares by package (exclusive time; a built-in's time goes
    to the packages that called it). cProfile slows Python down, so only the shares are meaningful."""
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    try:
        work()
    finally:
        profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    totals: dict[str, float] = {}
    for (filename, _line, _name), (_cc, _nc, tt, _ct, callers) in stats.items():
        owner = _package(filename, root)
        if owner is not None:
            totals[owner] = totals.get(owner, 0.0) + tt
            continue
        caller_tt = {k: v[2] for k, v in callers.items()}
        spread = sum(caller_tt.values())
        if not spread:
            totals["built-ins"] = totals.get("built-ins", 0.0) + tt
            continue
        for caller, share in caller_tt.items():
            name = _package(caller[0], root) or "built-ins"
            totals[name] = totals.get(name, 0.0) + tt * share / spread
    grand = sum(totals.values()) or 1.0
    return {k: round(100 * v / grand, 1) for k, v in by_count(totals) if 100 * v / grand >= 0.5}
