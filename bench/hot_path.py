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
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import REDIS_DB, _with_path, libpq_url  # noqa: E402
from bench.inprocess import InProcess  # noqa: E402

DB = "relayflow_bench_hot"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--redis-db", type=int, default=REDIS_DB)
    args = parser.parse_args()
    from engine.db import migrate
    from engine.tokens import ensure_local_token

    import os
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
    finally:
        inproc.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    res.pop("python_cpu_by_package_pct", None)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
