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

The "limit" comparator (`--limit`, on by default; `--no-drive` measures it alone): a bare Flask
route with a pooled psycopg connection reading the same run row (bench/limit_app.py), served by
the same gunicorn command on the same machine. Relayflow's `GET /v1/runs/{id}` and the limit's
`GET /runs/{id}` of one finished run are each driven in a closed loop (no pause between requests,
keep-alive `http.client` connections): 1 client for the unloaded p50, then `--clients` for
throughput, alternating Relayflow and the limit, `--limit-rounds` times. Reported as
`ratios.poll_p50_over_limit` (target <= 1.5) and `ratios.throughput_over_limit` (target >= 0.6).
"""
from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from api.cli.supervisor import Supervisor, child_env, web_command  # noqa: E402
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
from bench.web_stack import (  # noqa: E402
    WORKFLOW,
    add_web_args,
    drive,
    failed,
    free_port,
    percentiles_ms,
    result_header,
    save_result,
    wait_http_ready,
    web_stack,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (threads), default 50")
    parser.add_argument("--duration-s", type=float, default=20.0, help="seconds of load, default 20")
    add_web_args(parser, "gunicorn worker class, default gevent (the Procfile's)")
    parser.add_argument("--budget-s", type=float, default=240.0, help="give up (cleanly) after this long, default 240")
    parser.add_argument("--no-drive", dest="drive", action="store_false", help="skip the submit-then-poll load")
    parser.add_argument("--no-limit", dest="limit", action="store_false", help="skip the limit comparator")
    parser.add_argument("--limit-duration-s", type=float, default=6.0,
                        help="seconds of each closed-loop phase of the limit comparison, default 6")
    parser.add_argument("--limit-rounds", type=int, default=2, help="alternations of Relayflow and the limit, default 2")
    return parser.parse_args(argv)


def closed_loop(port: int, path: str, headers: dict[str, str], clients: int, duration_s: float) -> dict[str, Any]:
    """`clients` threads, one keep-alive connection each, sending GET `path` back to back for `duration_s`."""
    durations: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        start.wait()
        stop_at = time.monotonic() + duration_s
        try:
            while time.monotonic() < stop_at:
                began = time.perf_counter()
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors.append(str(response.status))
                    continue
                mine.append(time.perf_counter() - began)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(type(exc).__name__)
        finally:
            conn.close()
            with lock:
                durations.extend(mine)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join(duration_s + 30)
    elapsed = time.monotonic() - began
    return {**percentiles_ms(durations), "requests_per_s": round(len(durations) / elapsed, 1),
            "errors": len(errors), "clients": clients}


def compare_with_limit(supervisor: Supervisor, bench_url: str, web_port: int, token: str, run_id: str,
                       args: argparse.Namespace) -> dict[str, Any]:
    """Relayflow's poll against the limit app's (bench/limit_app.py), alternating, in closed loops."""
    port = free_port()
    env = child_env(bench_url, None)
    env["LIMIT_DATABASE_URL"] = bench_url
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([str(ROOT), *env.get("PYTHONPATH", "").split(os.pathsep)]))
    command = web_command(port, workers=args.web_workers, worker_class=args.worker_class, threads=args.web_threads,
                          control_socket=False)
    supervisor.spawn("limit", [*command[:-1], "bench.limit_app:create_app()"], env)
    wait_http_ready(f"http://127.0.0.1:{port}", supervisor, path=f"/runs/{run_id}")
    targets = {"relayflow": (web_port, f"/v1/runs/{run_id}", {"Authorization": f"Bearer {token}"}),
               "limit": (port, f"/runs/{run_id}", {})}
    phases: dict[str, list[dict[str, Any]]] = {}
    for p, path, headers in targets.values():  # warm-up: connections, prepared statements, caches
        closed_loop(p, path, headers, 4, 1.0)
    for _ in range(args.limit_rounds):
        for clients in (1, args.clients):
            for name, (p, path, headers) in targets.items():
                phases.setdefault(f"{name}_{clients}", []).append(
                    closed_loop(p, path, headers, clients, args.limit_duration_s))

    def med(key: str, field: str) -> float:
        return round(statistics.median(phase[field] for phase in phases[key]), 2)

    one, many = 1, args.clients
    summary = {"relayflow_p50_ms": med(f"relayflow_{one}", "p50_ms"), "limit_p50_ms": med(f"limit_{one}", "p50_ms"),
               "relayflow_requests_per_s": med(f"relayflow_{many}", "requests_per_s"),
               "limit_requests_per_s": med(f"limit_{many}", "requests_per_s")}
    summary["poll_p50_over_limit"] = round(summary["relayflow_p50_ms"] / summary["limit_p50_ms"], 2)
    summary["throughput_over_limit"] = round(summary["relayflow_requests_per_s"] / summary["limit_requests_per_s"], 2)
    return {"summary": summary, "phases": phases}


def print_table(res: dict[str, Any]) -> None:
    """The figures as a rich table."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=110)
    limit = res.get("limit")
    if limit:
        s = limit["summary"]
        console.print(f"poll, 1 client (closed loop): Relayflow p50 {s['relayflow_p50_ms']} ms, limit {s['limit_p50_ms']} ms "
                      f"-> {s['poll_p50_over_limit']}x (target <= 1.5)")
        console.print(f"poll, {limit['phases'] and max(p[0]['clients'] for p in limit['phases'].values())} clients: "
                      f"Relayflow {s['relayflow_requests_per_s']}/s, limit {s['limit_requests_per_s']}/s "
                      f"-> {s['throughput_over_limit']}x (target >= 0.6)")
    if "result" not in res:
        return
    r = res["result"]
    table = Table(title=f"API latency, {res['setup']['clients']} concurrent clients, {r['elapsed_s']} s")
    for column in ("request", "n", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"):
        table.add_column(column, justify="left" if column == "request" else "right")
    for name, key in (("POST /v1/workflows/{id}/runs", "submit"), ("GET /v1/runs/{id}", "poll"),
                      ("run: submit → final status", "run_end_to_end")):
        s = r[key]
        table.add_row(name, str(s["n"]), *(str(s.get(k, "-")) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")))
    console.print(table)
    console.print(f"requests/s {r['requests_per_s']} (submits/s {r['submits_per_s']}), runs finished "
                  f"{r['runs_finished']}, errors {r['error_count']} {r['errors'] or ''}")


def _finished_run(base_url: str, token: str, workflow_id: str) -> str:
    """A run of the workflow, once it has finished (the row both sides of the comparison read)."""
    headers = {"Authorization": f"Bearer {token}"}
    started = httpx.post(f"{base_url}/v1/workflows/{workflow_id}/runs", json={"inputs": {"ticket": " limit "}},
                         headers=headers, timeout=10.0)
    run_id = str(started.json()["run_id"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if httpx.get(f"{base_url}/v1/runs/{run_id}", headers=headers, timeout=10.0).json()["status"] == "succeeded":
            return run_id
        time.sleep(0.1)
    raise BenchError(f"run {run_id} did not finish")


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
            workflow_id = created.json()["workflow_id"]
            if args.drive:
                print(f"load: {args.clients} clients for {args.duration_s:.0f} s against {base_url}", flush=True)
                res["result"] = drive(base_url, token, workflow_id, args)
            if args.limit:
                print("limit comparator: bench/limit_app.py on the same gunicorn command", flush=True)
                res["limit"] = compare_with_limit(supervisor, bench_url, port, token,
                                                  _finished_run(base_url, token, workflow_id), args)
                res["ratios"] = {k: res["limit"]["summary"][k] for k in ("poll_p50_over_limit", "throughput_over_limit")}
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
