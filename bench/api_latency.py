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
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from api.cli.supervisor import Supervisor, child_env, web_command  # noqa: E402
from bench.harness import (DB_NAME, REDIS_DB, BenchError, WorkerGroup, drop_database, flush_redis,  # noqa: E402
                           fresh_database, server_facts, server_urls, worker_env)

RESULTS = ROOT / "bench" / "results"
WORKFLOW = {"inputs": {"ticket": {"type": "string", "required": True}},
            "nodes": [{"id": "clean", "type": "template", "config": {"template": "{{ inputs.ticket | trim }}"}},
                      {"id": "shout", "type": "template", "config": {"template": "{{ clean.text | upper }}"}}],
            "outputs": {"text": "{{ shout.text }}"}}
FINAL = {"succeeded", "failed", "cancelled"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (threads), default 50")
    parser.add_argument("--duration-s", type=float, default=20.0, help="seconds of load, default 20")
    parser.add_argument("--poll-every-s", type=float, default=0.1, help="pause between polls of one run, default 0.1")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn processes, default 2")
    parser.add_argument("--worker-class", default="gevent", choices=("gevent", "gthread"),
                        help="gunicorn worker class, default gevent (the Procfile's)")
    parser.add_argument("--web-threads", type=int, default=64, help="threads per process with gthread, default 64")
    parser.add_argument("--budget-s", type=float, default=180.0, help="give up (cleanly) after this long, default 180")
    return parser.parse_args(argv)


@dataclass
class Tally:
    """What the clients measured (appended under one lock)."""

    submit_s: list[float] = field(default_factory=list)
    poll_s: list[float] = field(default_factory=list)
    run_s: list[float] = field(default_factory=list)      # submit sent → final status seen
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def percentiles_ms(values_s: list[float]) -> dict[str, Any]:
    """p50/p90/p99/max and mean in ms (nearest-rank percentiles)."""
    if not values_s:
        return {"n": 0}
    ordered = sorted(values_s)

    def rank(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, max(0, int(round(p * len(ordered) + 0.5)) - 1))], 2)

    return {"n": len(ordered), "p50_ms": rank(0.50), "p90_ms": rank(0.90), "p99_ms": rank(0.99),
            "max_ms": round(1000 * ordered[-1], 2), "mean_ms": round(1000 * sum(ordered) / len(ordered), 2)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http_ready(base_url: str, supervisor: Supervisor, timeout_s: float = 60.0) -> None:
    """Poll /healthz until the web server answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dead = supervisor.dead()
        if dead is not None:
            raise BenchError(f"{dead.name} exited: {dead.tail()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise BenchError(f"web server not ready within {timeout_s:.0f}s")


def client_loop(base_url: str, token: str, workflow_id: str, stop_at: float, poll_every_s: float,
                tally: Tally, index: int) -> None:
    """One client: submit, poll to the end, repeat until `stop_at`."""
    headers = {"Authorization": f"Bearer {token}"}
    submits: list[float] = []
    polls: list[float] = []
    runs: list[float] = []
    errors: Counter[str] = Counter()
    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as http:
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            started = time.perf_counter()
            try:
                response = http.post(f"/v1/workflows/{workflow_id}/runs", json={"inputs": {"ticket": f" c{index} r{n} "}})
            except httpx.HTTPError as exc:
                errors[f"submit {type(exc).__name__}"] += 1
                continue
            submits.append(time.perf_counter() - started)
            if response.status_code != 202:
                errors[f"submit {response.status_code}"] += 1
                continue
            run_id = response.json()["run_id"]
            while time.monotonic() < stop_at + 10.0:  # let a run in flight finish after the load window
                time.sleep(poll_every_s)
                begun = time.perf_counter()
                try:
                    polled = http.get(f"/v1/runs/{run_id}")
                except httpx.HTTPError as exc:
                    errors[f"poll {type(exc).__name__}"] += 1
                    continue
                polls.append(time.perf_counter() - begun)
                if polled.status_code != 200:
                    errors[f"poll {polled.status_code}"] += 1
                    continue
                status = polled.json()["status"]
                if status in FINAL:
                    if status != "succeeded":
                        errors[f"run {status}"] += 1
                    runs.append(time.perf_counter() - started)
                    break
            else:
                errors["run not finished"] += 1
    with tally.lock:
        tally.submit_s += submits
        tally.poll_s += polls
        tally.run_s += runs
        tally.errors.update(errors)


def drive(base_url: str, token: str, workflow_id: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run the clients; their latencies, throughput and errors."""
    tally = Tally()
    started = time.monotonic()
    stop_at = started + args.duration_s
    threads = [threading.Thread(target=client_loop, args=(base_url, token, workflow_id, stop_at, args.poll_every_s,
                                                          tally, i), daemon=True) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, stop_at + 40.0 - time.monotonic()))
    elapsed = time.monotonic() - started
    requests = len(tally.submit_s) + len(tally.poll_s)
    return {"elapsed_s": round(elapsed, 2), "submit": percentiles_ms(tally.submit_s),
            "poll": percentiles_ms(tally.poll_s), "run_end_to_end": percentiles_ms(tally.run_s),
            "requests": requests, "requests_per_s": round(requests / elapsed, 1),
            "submits_per_s": round(len(tally.submit_s) / elapsed, 1), "runs_finished": len(tally.run_s),
            "errors": dict(tally.errors), "error_count": sum(tally.errors.values()),
            "clients_still_running": sum(t.is_alive() for t in threads)}


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
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    supervisor = Supervisor(log_dir)
    res: dict[str, Any] = {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/api_latency.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_at_start": os.getloadavg()},
        "setup": {"clients": args.clients, "duration_s": args.duration_s, "poll_every_s": args.poll_every_s,
                  "web": (f"gunicorn gthread {args.web_workers}x{args.web_threads}" if args.worker_class == "gthread"
                          else f"gunicorn gevent x{args.web_workers}"),
                  "workers": "dramatiq workers --processes 2 --threads 8", "database": DB_NAME,
                  "redis_db": REDIS_DB, "workflow_nodes": len(WORKFLOW["nodes"])},
    }
    deadline = time.monotonic() + args.budget_s
    try:
        flush_redis(redis_url)
        print(f"setting up {DB_NAME} and Redis db {REDIS_DB} (logs in {log_dir})", flush=True)
        fresh_database(admin_url, bench_url)
        from engine.tokens import ensure_local_token

        token = ensure_local_token(bench_url)
        res["machine"].update(server_facts(bench_url, redis_url))
        env = child_env(bench_url, redis_url)
        env = {k: v for k, v in env.items() if not k.startswith("RELAYFLOW_")}
        env["RELAYFLOW_QUEUE_NAME"] = queue
        supervisor.spawn("web", web_command(port, workers=args.web_workers, worker_class=args.worker_class, threads=args.web_threads,
                                            control_socket=False), env)
        with WorkerGroup("workers", "workers", worker_env(bench_url, redis_url, queue, 0), log_dir) as group:
            wait_http_ready(base_url, supervisor)
            created = httpx.post(f"{base_url}/v1/workflows", json={"name": "latency", "definition": WORKFLOW},
                                 headers={"Authorization": f"Bearer {token}"}, timeout=10.0)
            if created.status_code != 201:
                raise BenchError(f"could not create the workflow: {created.status_code} {created.text}")
            if time.monotonic() + args.duration_s + 40 > deadline:
                raise BenchError("not enough of the time budget left for the load")
            print(f"load: {args.clients} clients for {args.duration_s:.0f} s against {base_url}", flush=True)
            res["result"] = drive(base_url, token, created.json()["workflow_id"], args)
            group.check()
        if supervisor.dead() is not None:
            raise BenchError("the web server died during the load")
        res["machine"]["loadavg_at_end"] = os.getloadavg()
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"api_latency_{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
        path.write_text(json.dumps(res, indent=2) + "\n")
        print_table(res)
        print(f"results: {path.relative_to(ROOT)}")
        return 0
    except BenchError as exc:
        print(f"benchmark failed: {exc} (logs in {log_dir})", file=sys.stderr)
        return 1
    finally:
        supervisor.stop(timeout_s=15.0)
        for cleanup in (lambda: flush_redis(redis_url), lambda: drop_database(admin_url)):
            try:
                cleanup()
            except Exception as exc:  # noqa: BLE001 - report and go on cleaning up
                print(f"cleanup: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
