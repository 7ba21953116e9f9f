#!/usr/bin/env python
"""Poll and submit latency with 1,000 event streams open: `python bench/streams.py`.

Starts the real stack on loopback against the local PostgreSQL and Redis: gunicorn as
`relayflow up` runs it (`api.cli.supervisor.web_command`: gevent, 2 processes) and one `dramatiq
workers --processes 2 --threads 8` group, on its own database `relayflow_bench_streams`
(created, migrated, dropped at the end) and Redis database 14 under its own queue name (only
its own keys are deleted: no FLUSHDB). Then:

1. baseline: `--clients` threads loop for `--duration-s`: submit a two-node run, poll it every
   `--poll-every-s` until it ends;
2. opens `--streams` `GET /v1/runs/{id}/events` streams (raw sockets) from `--tokens` read-only
   tokens, following `--runs` runs that wait for a person (so the streams stay open);
3. the web processes' CPU over `--idle-s` with the streams open and no requests;
4. the same load again with every stream open, then checks the streams are still open and
   live: one run is answered and the time until all its followers see `run.succeeded` is taken;
5. the same load once more after closing the streams: a control for the machine's own drift.

`--worker-class gthread --streams 200` shows the server before (one thread per stream). The
JSON goes under bench/results/ and is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
import psycopg  # noqa: E402
import redis as redis_lib  # noqa: E402

from api.cli.supervisor import Supervisor  # noqa: E402
from bench.harness import BenchError, libpq_url, server_facts  # noqa: E402
from bench.web_stack import WORKFLOW, add_web_args, drive, failed, free_port, result_header, save_result, web_stack  # noqa: E402

DB_NAME = "relayflow_bench_streams"
REDIS_DB = 14
ASK = {"nodes": [{"id": "ask", "type": "question", "config": {"question": "Go on?", "answer_type": "text"}},
                 {"id": "echo", "type": "template", "after": ["ask"], "config": {"template": "{{ ask.answer }}"}}],
       "outputs": {"answer": "{{ echo.text }}"}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="event streams held open, default 1000")
    parser.add_argument("--tokens", type=int, default=25, help="read-only tokens the streams use, default 25")
    parser.add_argument("--runs", type=int, default=20, help="waiting runs the streams follow, default 20")
    parser.add_argument("--clients", type=int, default=20, help="concurrent submit/poll clients, default 20")
    parser.add_argument("--duration-s", type=float, default=20.0, help="seconds of load per phase, default 20")
    parser.add_argument("--idle-s", type=float, default=15.0,
                        help="seconds the streams' own CPU is measured with no requests, default 15 (one keep-alive)")
    add_web_args(parser, "gunicorn worker class, default gevent (gthread: the server before)")
    parser.add_argument("--web-connections", type=int, default=2000, help="connections per process with gevent")
    return parser.parse_args(argv)


class Streams:
    """Raw `GET /v1/runs/{id}/events` streams held open by this process."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.socks: list[socket.socket] = []
        self.run_of: list[str] = []
        self.buffers: list[bytes] = []

    def open(self, run_ids: list[str], tokens: list[str], count: int, status_timeout_s: float) -> dict[str, Any]:
        """Open `count` streams (round-robin over runs and tokens); how many answered 200, and how fast."""
        started = time.perf_counter()
        for i in range(count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            run_id = run_ids[i % len(run_ids)]
            sock.sendall((f"GET /v1/runs/{run_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          f"Authorization: Bearer {tokens[i % len(tokens)]}\r\nConnection: close\r\n\r\n").encode())
            self.socks.append(sock)
            self.run_of.append(run_id)
            self.buffers.append(b"")
        statuses: Counter[str] = Counter()
        deadline = time.monotonic() + status_timeout_s
        for i in range(len(self.socks)):
            ok = self._read_until(i, b"run.interrupted", deadline)
            head = self.buffers[i].split(b"\r\n", 1)[0]
            statuses[head.split(b" ", 2)[1].decode() if ok and head else "no answer"] += 1
        return {"opened": count, "statuses": dict(statuses), "open_s": round(time.perf_counter() - started, 2)}

    def _read_until(self, i: int, needle: bytes, deadline: float) -> bool:
        sock = self.socks[i]
        while needle not in self.buffers[i]:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, OSError):
                return False
            if not chunk:
                return False
            self.buffers[i] += chunk
        return True

    def still_open(self) -> int:
        """Streams the server has not closed (reading what arrived meanwhile)."""
        alive = 0
        for i, sock in enumerate(self.socks):
            sock.setblocking(False)
            try:
                while chunk := sock.recv(65536):
                    self.buffers[i] += chunk
                continue  # b"": closed by the server
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
            finally:
                sock.setblocking(True)
        return alive

    def fan_out_s(self, run_id: str, timeout_s: float) -> tuple[float | None, int]:
        """Seconds until every stream of `run_id` has its `run.succeeded` (None: not all within timeout)."""
        started = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        followers = [i for i, r in enumerate(self.run_of) if r == run_id]
        done = sum(self._read_until(i, b"event: run.succeeded", deadline) for i in followers)
        return (round(time.perf_counter() - started, 3) if done == len(followers) else None), len(followers)

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def web_footprint(root_pid: int) -> dict[str, Any]:
    """RSS and open files of each gunicorn worker process."""
    found = []
    for child in psutil.Process(root_pid).children(recursive=True):
        try:
            found.append({"pid": child.pid, "rss_mb": round(child.memory_info().rss / 2**20, 1),
                          "open_fds": child.num_fds(), "threads": child.num_threads()})
        except psutil.Error:
            pass
    return {"workers": found}


def idle_cpu(root_pid: int, seconds: float) -> dict[str, Any]:
    """CPU the web processes use over `seconds` with no requests (the open streams' own cost)."""
    procs = psutil.Process(root_pid).children(recursive=True) + [psutil.Process(root_pid)]
    before = {p.pid: sum(p.cpu_times()[:2]) for p in procs}
    time.sleep(seconds)
    used = sum(sum(p.cpu_times()[:2]) - before[p.pid] for p in procs if p.is_running())
    return {"seconds": seconds, "cpu_s": round(used, 2), "cpu_percent_of_one_core": round(100 * used / seconds, 1)}


def setup_database(admin_url: str, bench_url: str) -> None:
    from engine.db import migrate

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    migrate(bench_url)


def cleanup(admin_url: str, redis_url: str, queue: str) -> None:
    from engine import db

    for key, engine in list(db._engines.items()):
        engine.dispose()
        db._engines.pop(key, None)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    client = redis_lib.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"*{queue}*", count=1000):  # only this run's keys: others share db 14
        client.delete(key)
    client.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # this process holds every stream's socket
    if soft < args.streams + 256 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.streams + 256, hard))
    pg = libpq_url(os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres")
    admin_url, bench_url = pg.rsplit("/", 1)[0] + "/postgres", pg.rsplit("/", 1)[0] + f"/{DB_NAME}"
    redis_url = (os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + f"/{REDIS_DB}"
    log_dir = Path(tempfile.mkdtemp(prefix="relayflow-streambench-"))
    queue = f"bench_streams_{os.getpid()}"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    web = (f"gunicorn gevent {args.web_workers} processes x {args.web_connections} connections"
           if args.worker_class == "gevent" else f"gunicorn gthread {args.web_workers}x{args.web_threads}")
    res = result_header("bench/streams.py", argv, {
        "streams": args.streams, "tokens": args.tokens, "runs_followed": args.runs, "clients": args.clients,
        "duration_s": args.duration_s, "poll_every_s": args.poll_every_s, "web": web, "database": DB_NAME,
        "redis_db": REDIS_DB})
    supervisor = Supervisor(log_dir)
    streams = Streams(port)
    try:
        print(f"setting up {DB_NAME} (logs in {log_dir})", flush=True)
        setup_database(admin_url, bench_url)
        from engine.db import get_engine
        from engine.settings import Settings
        from engine.store import Store
        from engine.tokens import ensure_local_token, issue_token

        token = ensure_local_token(bench_url)
        store = Store.from_engine(get_engine(Settings(database_url=bench_url)))
        readers = [issue_token(store, "default", f"reader {i}", ("run",)).token for i in range(args.tokens)]
        res["machine"].update(server_facts(bench_url, redis_url))
        with web_stack(supervisor, port, bench_url, redis_url, queue, args, args.web_connections) as (web_proc, _group):
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
                quick = http.post("/v1/workflows", json={"name": "latency", "definition": WORKFLOW}).json()["workflow_id"]
                ask = http.post("/v1/workflows", json={"name": "ask", "definition": ASK}).json()["workflow_id"]
                waiting = [http.post(f"/v1/workflows/{ask}/runs", json={}).json()["run_id"] for _ in range(args.runs)]
                deadline = time.monotonic() + 60
                while any(http.get(f"/v1/runs/{r}").json()["status"] != "interrupted" for r in waiting):
                    if time.monotonic() > deadline:
                        raise BenchError("the waiting runs did not reach their question")
                    time.sleep(0.2)
            print(f"baseline: {args.clients} clients for {args.duration_s:.0f} s, no streams", flush=True)
            res["without_streams"] = drive(base_url, token, quick, args, join_grace_s=70.0)
            res["footprint_without_streams"] = web_footprint(web_proc.process.pid)
            print(f"opening {args.streams} streams from {args.tokens} tokens", flush=True)
            res["streams_opened"] = streams.open(waiting, readers, args.streams, status_timeout_s=60)
            res["idle_cpu_with_streams"] = idle_cpu(web_proc.process.pid, args.idle_s)
            print(f"load: {args.clients} clients for {args.duration_s:.0f} s, {args.streams} streams open", flush=True)
            res["with_streams"] = drive(base_url, token, quick, args, join_grace_s=70.0)
            res["footprint_with_streams"] = web_footprint(web_proc.process.pid)
            res["streams_still_open"] = streams.still_open()
            try:
                with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
                    interrupt = http.get(f"/v1/runs/{waiting[0]}").json()["interrupt"]
                    http.post(f"/v1/runs/{waiting[0]}/resume", json={"event_id": interrupt["event_id"], "data": "go"})
                fan_out_s, followers = streams.fan_out_s(waiting[0], timeout_s=30)
                res["answer_to_all_followers_s"] = {"followers": followers, "seconds": fan_out_s}
            except httpx.HTTPError as exc:  # the server before (gthread) stops answering
                res["answer_to_all_followers_s"] = {"error": f"{type(exc).__name__}: the resume got no answer"}
            # control: the same load once the streams are closed (the machine's own drift)
            streams.close()
            time.sleep(2.0)
            print(f"control: {args.clients} clients for {args.duration_s:.0f} s, streams closed", flush=True)
            res["after_closing_streams"] = drive(base_url, token, quick, args, join_grace_s=70.0)
        path = save_result(res, "streams")
        print(json.dumps(res, indent=2))
        for phase in ("without_streams", "with_streams", "after_closing_streams"):
            r = res[phase]
            print(f"{phase}: poll p50 {r['poll'].get('p50_ms')} ms p99 {r['poll'].get('p99_ms')} ms; submit p50 "
                  f"{r['submit'].get('p50_ms')} ms p99 {r['submit'].get('p99_ms')} ms; errors {r['errors']}")
        print(f"results: {path.relative_to(ROOT)}")
        return 0
    except BenchError as exc:
        return failed(exc, log_dir)
    finally:
        streams.close()
        supervisor.stop(timeout_s=15.0)
        try:
            cleanup(admin_url, redis_url, queue)
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"cleanup: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
