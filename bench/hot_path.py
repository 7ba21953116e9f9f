"""A light, in-process measure of the hot path per node (round trips, statements, WAL, CPU).

`bench/run_all.py` is the full benchmark; this runs only its in-process phase on a database of
its own (`relayflow_bench_hot`), so a change to the claim/commit statements can be compared
before and after in ~20 s:

    python bench/hot_path.py [--runs 100] [--nodes 5]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import DB_NAME, REDIS_DB, _with_path, libpq_url  # noqa: E402
from bench.inprocess import InProcess  # noqa: E402

DB = f"{DB_NAME}_hot"  # relayflow_bench_hot unless BENCH_DB_NAME moves it


def wal_pass(inproc: InProcess, runs: int, nodes: int) -> dict[str, Any]:
    """WAL bytes per node of this database only (pg_walinspect), by relation and record kind.

    `pg_current_wal_insert_lsn` is server-wide, so on a shared server the plain difference counts
    other databases' writes too; this keeps the records whose block belongs to the bench database
    and the commit records (which carry no block) of the window.
    """
    from bench.counting import wal_lsn

    wf = inproc._workflow("walpass", nodes)
    inproc._submit(wf, runs)()
    hot_sql = ("SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
               "WHERE relname IN ('runs', 'node_runs', 'run_events', 'spaces')")
    time.sleep(11)  # backends flush their table statistics when idle, at least every 10 s
    stats_before = {r[0]: r[1:] for r in inproc.meta.execute(hot_sql).fetchall()}
    totals: dict[str, int] = {}
    kinds: dict[str, int] = {}
    executed = 0
    while len(inproc.worker.messages):  # small windows, read at once: a busy server recycles WAL segments quickly
        start = wal_lsn(inproc.meta)
        for _ in range(10):
            if not inproc.worker.run_next():
                break
            executed += 1
        end = wal_lsn(inproc.meta)
        while int(inproc.meta.execute("SELECT pg_current_wal_flush_lsn() - '0/0'").fetchone()[0]) < end:  # type: ignore[index]
            time.sleep(0.02)  # the claims commit asynchronously: wait until the window is on disk
        for name, kind, total, count, fpi in inproc.meta.execute("""
            WITH w AS (
                -- full-page images (the first change of a page after a checkpoint) counted apart: they
            -- depend on when the checkpoint fell, not on the statements
            SELECT w.record_length - w.fpi_length AS len, w.fpi_length AS fpi, w.resource_manager || ' ' || w.record_type AS kind,
                       regexp_match(w.block_ref, 'rel \\d+/(\\d+)/(\\d+)') AS ref
                  FROM pg_get_wal_records_info('0/0'::pg_lsn + %s::numeric, '0/0'::pg_lsn + %s::numeric) w)
            SELECT coalesce(c.relname, w.kind), w.kind, sum(w.len)::bigint, count(*), sum(w.fpi)::bigint
              FROM w LEFT JOIN pg_class c ON c.relfilenode = w.ref[2]::oid
             WHERE w.ref IS NULL AND w.kind LIKE 'Transaction%%'
                OR w.ref[1]::oid = (SELECT oid FROM pg_database WHERE datname = current_database())
             GROUP BY 1, 2""", (start, end)).fetchall():
            totals[str(name)] = totals.get(str(name), 0) + int(total)
            totals["full-page images"] = totals.get("full-page images", 0) + int(fpi)
            kinds[f"{name} {kind}"] = kinds.get(f"{name} {kind}", 0) + int(total)
            kinds[f"{name} {kind} (records)"] = kinds.get(f"{name} {kind} (records)", 0) + int(count)
    time.sleep(11)
    stats_after = {r[0]: r[1:] for r in inproc.meta.execute(hot_sql).fetchall()}
    out: dict[str, Any] = {name: round(total / executed) for name, total in sorted(totals.items(), key=lambda kv: -kv[1])}
    out["total (commit records of other databases included)"] = sum(out.values())
    out["total without full-page images"] = out["total (commit records of other databases included)"] - out["full-page images"]
    # by relation and WAL record kind (bytes, and records per node): which writes make the bytes
    # rows inserted, updated and HOT-updated per node: a non-HOT update writes every index
    out["rows_per_node"] = {
        rel: dict(zip(("inserted", "updated", "hot_updated"),
                      (round((a - b) / executed, 2) for a, b in zip(stats_after[rel], stats_before[rel], strict=True)),
                      strict=True))
        for rel in sorted(stats_after)}
    out["by_record"] = {k: round(v / executed, 2) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--redis-db", type=int, default=REDIS_DB)
    args = parser.parse_args()
    import os

    from engine.db import migrate
    from engine.tokens import ensure_local_token
    pg = libpq_url(os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres")
    admin, url = _with_path(pg, "postgres"), _with_path(pg, DB)
    redis_url = _with_path(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0", str(args.redis_db))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB}")
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        except psycopg.Error:
            pass
    ensure_local_token(url)
    inproc = InProcess(url, redis_url, f"bench_hot_{uuid.uuid4().hex[:6]}", Path(tempfile.mkdtemp()))
    try:
        res = inproc.relayflow(args.runs, args.nodes)
        res["wal_per_node"] = wal_pass(inproc, args.runs, args.nodes)
    finally:
        inproc.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    res.pop("python_cpu_by_package_pct", None)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
