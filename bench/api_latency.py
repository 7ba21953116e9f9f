#!/usr/bin/env python
"""Submit/poll latency of the HTTP API under 50 concurrent clients: `python bench/api_latency.py`.

Starts the real stack on loopback against the local PostgreSQL and Redis: gunicorn as
`relayflow up` runs it (`api.cli.supervisor.web_command`: gevent, 2 processes; `--worker-class gthread`
for the former 2 x 64 threads) and one
`dramatiq workers --processes 2 --threads 8` group, on a fresh `relayflow_bench` database and
Redis database 14 (bench/harness.py; both are cleared at the end). It creates a two-node
template workflow, then each of `--clients` threads (one httpx client each) loops for
`--duration-s`: submit a run (POST /v1/workflows/{id}/runs), poll it (GET /v1/runs/{id}) every
`--poll-every-s` until it has finished, then the next. Submit and poll latencies are reported
separately (p50/p90/p99/max), with requests/s, runs finished and errors; the JSON goes under
bench/results/ and a table is printed.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from api.cli.supervisor import Supervisor  # noqa: E402
from bench.harness import (  # noqa: E402
    DB_NAME,
    REDIS_DB,
    BenchError,
    drop_database,
    flush_redis,
    fresh_database,
    server_facts,
    server_urls,
)
from bench.web_stack import WORKFLOW, add_web_args, drive, failed, free_port, result_header, save_result, web_stack  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (threads), default 50")
    parser.add_argument("--duration-s", type=float, default=20.0, help="seconds of load, default 20")
    add_web_args(parser, "gunicorn worker class, default gevent (the Procfile's)")
    parser.add_argument("--budget-s", type=float, default=180.0, help="give up (cleanly) after this long, default 180")
    return parser.parse_args(argv)


def print_table(res: dict[str, Any]) -> None:
    """The figures as a rich table."""
    from rich.console import Console
    from rich.table import Table

    r = res["result"]
    table = Table(title=f"API latency, {res['setup']['clients']} concurrent clients, {r['elapsed_s']} s")
    for column in ("request", "n", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"):
        table.add_column(column, justify="left" if column == "request" else "right")
    for name, key in (("POST /v1/workflows/{id}/runs", "submit"), ("GET /v1/runs/{id}", "poll"),
                      ("run: submit → final status", "run_end_to_end")):
        s = r[key]
        table.add_row(name, str(s["n"]), *(str(s.get(k, "-")) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")))
    console = Console(width=110)
    console.print(table)
    console.print(f"requests/s {r['requests_per_s']} (submits/s {r['submits_per_s']}), runs finished "
                  f"{r['runs_finished']}, errors {r['error_count']} {r['errors'] or ''}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    admin_url, bench_url, redis_url = server_urls()
    log_dir = Path(tempfile.mkdtemp(prefix="relayflow-apibench-"))
    queue = f"bench_api_{os.getpid()}"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    supervisor = Supervisor(log_dir)
    res = result_header("bench/api_latency.py", argv, {
        "clients": args.clients, "duration_s": args.duration_s, "poll_every_s": args.poll_every_s,
        "web": (f"gunicorn gthread {args.web_workers}x{args.web_threads}" if args.worker_class == "gthread"
                else f"gunicorn gevent x{args.web_workers}"),
        "database": DB_NAME, "redis_db": REDIS_DB, "workflow_nodes": len(WORKFLOW["nodes"])})
    deadline = time.monotonic() + args.budget_s
    try:
        flush_redis(redis_url)
        print(f"setting up {DB_NAME} and Redis db {REDIS_DB} (logs in {log_dir})", flush=True)
        fresh_database(admin_url, bench_url)
        from engine.tokens import ensure_local_token

        token = ensure_local_token(bench_url)
        res["machine"].update(server_facts(bench_url, redis_url))
        with web_stack(supervisor, port, bench_url, redis_url, queue, args):
            created = httpx.post(f"{base_url}/v1/workflows", json={"name": "latency", "definition": WORKFLOW},
                                 headers={"Authorization": f"Bearer {token}"}, timeout=10.0)
            if created.status_code != 201:
                raise BenchError(f"could not create the workflow: {created.status_code} {created.text}")
            if time.monotonic() + args.duration_s + 40 > deadline:
                raise BenchError("not enough of the time budget left for the load")
            print(f"load: {args.clients} clients for {args.duration_s:.0f} s against {base_url}", flush=True)
            res["result"] = drive(base_url, token, created.json()["workflow_id"], args)
        path = save_result(res, "api_latency")
        print_table(res)
        print(f"results: {path.relative_to(ROOT)}")
        return 0
    except BenchError as exc:
        return failed(exc, log_dir)
    finally:
        supervisor.stop(timeout_s=15.0)
        for cleanup in (lambda: flush_redis(redis_url), lambda: drop_database(admin_url)):
            try:
                cleanup()
            except Exception as exc:  # noqa: BLE001 - report and go on cleaning up
                print(f"cleanup: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
