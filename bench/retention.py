#!/usr/bin/env python
"""Retention under load: `python bench/retention.py [--events 1000000] [--pauses 0.5,0.2,0] [--window-s 5]`.

On a fresh database `relayflow_bench_retention` of the local PostgreSQL (dropped if left over,
migrated, dropped at the end; no Redis: node messages stay in process), for each pause between
batches in `--pauses`:
- builds ~`--events` run_events in a few `INSERT … SELECT generate_series` statements, with
  proportional rows elsewhere: top-level runs that ended 60 days ago, one child run each (a
  batch item), 4 node rows and 20 events per run, one answered question per top-level run;
- EXPLAIN ANALYZE of one batch's delete (rolled back): the plan must pick runs through
  `ix_runs_expired`, not a scan of `runs`;
- a steady stream of small workflows (3 template nodes, one run at a time, submitted through the
  service as the API does, each node run by the engine's executor as a worker does, with
  engine/testing.py's in-process dispatcher); per-node latency = one `Executor.run_node` (claim,
  execute, commit, send successors);
- meanwhile the retention sweep (engine/retention.py) deletes everything built, in windows of
  `--window-s` alternating with windows without deletes (the machine is shared and its load
  drifts: each node is compared with its neighbours); the sweep's time (its windows only),
  events and runs deleted per second, and the stream's per-node p50/p95 in and out of them.
Prints a table, writes bench/results/retention.json. A budget timer ends the process whatever
happens (`--budget-s`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench.harness import libpq_url, linear  # noqa: E402

DB_NAME = "relayflow_bench_retention"
CHILDREN, NODES, EVENTS_PER_RUN = 1, 4, 20  # per top-level run: child runs; per run: node rows, events
RESULT = ROOT / "bench" / "results" / "retention.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="run_events to build and delete per round")
    parser.add_argument("--pauses", default="0.5,0.2,0", help="RELAYFLOW_RETENTION_PAUSE_S of each round, comma-separated")
    parser.add_argument("--batch", type=int, default=100, help="RELAYFLOW_RETENTION_BATCH")
    parser.add_argument("--window-s", type=float, default=5.0,
                        help="sweep windows alternate with windows without deletes, this long each")
    parser.add_argument("--budget-s", type=float, default=1500.0, help="the whole bench stops by itself after this")
    return parser.parse_args(argv)


def urls() -> tuple[str, str]:
    """(admin URL, bench database URL) on the local server unless DATABASE_URL says otherwise."""
    base = libpq_url(os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres")
    head = base.rsplit("/", 1)[0]
    return f"{head}/postgres", f"{head}/{DB_NAME}"


def fresh_database(admin_url: str, bench_url: str) -> None:
    from engine.db import migrate

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    migrate(bench_url)


def drop_database(admin_url: str) -> None:
    from engine import db

    for key, engine in list(db._engines.items()):
        engine.dispose()
        db._engines.pop(key, None)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


# -- the data to delete ------------------------------------------------------------------------------
def build(conn: psycopg.Connection[Any], workflow_id: str, events: int) -> dict[str, Any]:
    """Insert the expired runs in bulk; their counts and how long it took."""
    roots = max(1, events // (EVENTS_PER_RUN * (1 + CHILDREN)))
    version_id = conn.execute("SELECT id FROM workflow_versions WHERE workflow_id = %s", (workflow_id,)).fetchone()[0]  # type: ignore[index]
    started = time.monotonic()
    ended = "now() - interval '60 days' - g * interval '1 second'"
    conn.execute(f"""
        INSERT INTO runs (id, space_id, workflow_id, version_id, version, status, inputs, outputs, remaining,
                          created_at, started_at, finished_at, updated_at)
        SELECT md5('root' || g)::uuid, 'default', %(wf)s, %(v)s, 1, 'succeeded', '{{}}', '{{"result": "x"}}', 0,
               {ended}, {ended}, {ended}, {ended}
          FROM generate_series(1, %(roots)s) g""", {"wf": workflow_id, "v": version_id, "roots": roots})
    conn.execute(f"""
        INSERT INTO runs (id, space_id, workflow_id, version_id, version, status, inputs, outputs, remaining,
                          parent_run_id, parent_node_id, parent_epoch, depth, body, item_index,
                          created_at, started_at, finished_at, updated_at)
        SELECT md5('child' || g || '/' || k)::uuid, 'default', %(wf)s, %(v)s, 1, 'succeeded', '{{"item": 1}}',
               '{{"x": 1}}', 0, md5('root' || g)::uuid, 'n0', 1, 1, 'n0', k, {ended}, {ended}, {ended}, {ended}
          FROM generate_series(1, %(roots)s) g, generate_series(0, %(children)s - 1) k""",
                 {"wf": workflow_id, "v": version_id, "roots": roots, "children": CHILDREN})
    conn.execute("""
        INSERT INTO node_runs (run_id, node_id, status, in_degree, join_any, pending_in, active_in, epoch, attempts,
                               settled, output, queued_at, started_at, finished_at)
        SELECT r.id, 'n' || k, 'succeeded', CASE WHEN k = 0 THEN 0 ELSE 1 END, false, 0, 0, 1, 1, true,
               jsonb_build_object('text', repeat('x', 40)), r.created_at, r.created_at, r.finished_at
          FROM runs r, generate_series(0, %(nodes)s - 1) k WHERE r.workflow_id = %(wf)s""",
                 {"wf": workflow_id, "nodes": NODES})
    conn.execute("""
        INSERT INTO run_events (run_id, type, node_id, data, created_at)
        SELECT r.id, CASE WHEN k %% 2 = 0 THEN 'node.started' ELSE 'node.succeeded' END, 'n' || (k %% %(nodes)s),
               jsonb_build_object('attempt', 1, 'output', jsonb_build_object('text', repeat('x', 60))), r.finished_at
          FROM runs r, generate_series(1, %(per_run)s) k WHERE r.workflow_id = %(wf)s""",
                 {"wf": workflow_id, "nodes": NODES, "per_run": EVENTS_PER_RUN})
    conn.execute("""
        INSERT INTO run_interrupts (event_id, run_id, node_id, type, data, status, answer, created_at, answered_at)
        SELECT md5('ask' || r.id), r.id, 'n1', 'question', '{"question": "ok?"}', 'answered', '"yes"',
               r.created_at, r.finished_at
          FROM runs r WHERE r.workflow_id = %(wf)s AND r.parent_run_id IS NULL""", {"wf": workflow_id})
    conn.execute("ANALYZE")
    built = counts(conn, workflow_id)
    return {**built, "build_s": round(time.monotonic() - started, 1)}


def counts(conn: psycopg.Connection[Any], workflow_id: str) -> dict[str, int]:
    """Rows of the bulk workflow's runs, by table."""
    row = conn.execute("""
        SELECT (SELECT count(*) FROM runs WHERE workflow_id = %(wf)s),
               (SELECT count(*) FROM node_runs n JOIN runs r ON r.id = n.run_id WHERE r.workflow_id = %(wf)s),
               (SELECT count(*) FROM run_events e JOIN runs r ON r.id = e.run_id WHERE r.workflow_id = %(wf)s),
               (SELECT count(*) FROM run_interrupts i JOIN runs r ON r.id = i.run_id WHERE r.workflow_id = %(wf)s)
        """, {"wf": workflow_id}).fetchone()
    assert row is not None
    return dict(zip(("runs", "node_runs", "run_events", "run_interrupts"), (int(v) for v in row), strict=True))


def explain_batch(conn: psycopg.Connection[Any], batch: int) -> dict[str, Any]:
    """EXPLAIN ANALYZE of one batch's delete, rolled back; whether the pick used ix_runs_expired."""
    from engine.store.sql.retention import DELETE_EXPIRED_BATCH

    with conn.transaction(force_rollback=True):
        plan = [r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + DELETE_EXPIRED_BATCH.pyformat,
                                           {"default_days": 30.0, "batch": batch})]
    text = "\n".join(plan)
    return {"uses_ix_runs_expired": "ix_runs_expired" in text,
            "seq_scan_on_runs": "Seq Scan on runs" in text, "plan": plan}


# -- the stream of small workflows -----------------------------------------------------------------
class Stream:
    """Small workflows one after another, each node run by the engine's executor in this thread."""

    def __init__(self, bench_url: str) -> None:
        from engine.db import get_engine
        from engine.executor import Executor
        from engine.service import Relayflow
        from engine.settings import Settings
        from engine.store import Store
        from engine.testing import MemoryDispatcher
        from engine.tokens import DEFAULT_SPACE

        settings = Settings(database_url=bench_url, space_max_running_nodes=0)
        self.messages = MemoryDispatcher()
        self.service = Relayflow(Store.from_engine(get_engine(settings)), self.messages, settings)
        self.executor = Executor(Store.from_engine(get_engine(settings, pre_ping=False)), self.messages, settings)
        self.space = DEFAULT_SPACE
        self.workflow_id = self.service.create_workflow(self.space, "stream", None, linear(3))["workflow_id"]

    def run(self, stop: threading.Event) -> list[tuple[float, float]]:
        """Submit and run workflows until `stop`; (when it began, seconds) of each node's `run_node`."""
        took: list[tuple[float, float]] = []
        while not stop.is_set():
            self.service.submit_run(self.space, self.workflow_id, {})
            while (message := self.messages.pop_due()) is not None:
                began = time.perf_counter()
                self.executor.run_node(*message)
                took.append((began, time.perf_counter() - began))
        return took


def latency(took: list[float]) -> dict[str, Any]:
    """p50/p95/max in ms."""
    if len(took) < 20:
        return {"n": len(took)}
    cuts = statistics.quantiles(took, n=100)
    return {"n": len(took), "p50_ms": round(1000 * cuts[49], 2), "p95_ms": round(1000 * cuts[94], 2),
            "max_ms": round(1000 * max(took), 2)}


def sweep_under_stream(stream: Stream, bench_url: str, pause_s: float, batch: int, window_s: float) -> dict[str, Any]:
    """Sweep in windows of `window_s` alternating with windows without, while the stream runs.

    The machine is shared (its load moves by the minute): comparing each node with its
    neighbours a few seconds away, rather than a baseline taken before, keeps that drift out.
    A node counts as `during` if it began while a sweep window was open.
    """
    from engine.db import get_engine
    from engine.retention import Retention
    from engine.settings import Settings
    from engine.store.retention import Deleted

    settings = Settings(database_url=bench_url, retention_pause_s=pause_s, retention_batch=batch)
    sweeper = Retention(get_engine(settings), settings)
    stop_stream = threading.Event()
    took: list[tuple[float, float]] = []
    runner = threading.Thread(target=lambda: took.extend(stream.run(stop_stream)), name="stream")
    runner.start()
    windows: list[tuple[float, float]] = []
    done, batches, finished = Deleted(), 0, False
    while not finished:
        time.sleep(window_s)  # a window without deletes
        stop = threading.Event()
        timer = threading.Timer(window_s, stop.set)
        began = time.perf_counter()
        timer.start()
        report = sweeper.sweep(stop)
        timer.cancel()
        windows.append((began, time.perf_counter()))
        done, batches = done + report.deleted, batches + report.batches
        finished = not stop.is_set()  # it ended by itself: nothing expired is left
    time.sleep(window_s)
    stop_stream.set()
    runner.join()
    sweep_s = sum(end - began for began, end in windows)
    during = [t for at, t in took if any(began <= at < end for began, end in windows)]
    between = [t for at, t in took if not any(began <= at < end for began, end in windows)]
    return {"pause_s": pause_s, "batch": batch, "window_s": window_s, "sweep_s": round(sweep_s, 1),
            "windows": len(windows), "batches": batches,
            "deleted": {"runs": done.runs, "top_level_runs": done.roots, "node_runs": done.nodes,
                        "run_events": done.events, "run_interrupts": done.interrupts},
            "events_per_s": round(done.events / sweep_s), "runs_per_s": round(done.runs / sweep_s),
            "stream_without_sweep": latency(between), "stream_during_sweep": latency(during)}


def measure(args: argparse.Namespace, bench_url: str) -> dict[str, Any]:
    from engine.tokens import DEFAULT_SPACE, ensure_local_token

    ensure_local_token(bench_url)  # creates the default space
    stream = Stream(bench_url)
    bulk = stream.service.create_workflow(DEFAULT_SPACE, "bulk", None, linear(NODES))["workflow_id"]
    warm = threading.Event()
    threading.Timer(3.0, warm.set).start()
    stream.run(warm)  # warm-up: pools, caches, prepared statements
    rounds = []
    with psycopg.connect(bench_url, autocommit=True) as conn:
        for pause in (float(p) for p in args.pauses.split(",")):
            built = build(conn, bulk, args.events)
            plan = explain_batch(conn, args.batch)
            swept = sweep_under_stream(stream, bench_url, pause, args.batch, args.window_s)
            left = counts(conn, bulk)
            rounds.append({"built": built, "explain": plan, **swept, "left": left})
            print_round(rounds[-1])
    return {"rounds": rounds}


def print_round(r: dict[str, Any]) -> None:
    off, on = r["stream_without_sweep"], r["stream_during_sweep"]
    print(f"\npause {r['pause_s']} s, batch {r['batch']}: built {r['built']['run_events']:,} events, "
          f"{r['built']['runs']:,} runs, {r['built']['node_runs']:,} node rows in {r['built']['build_s']} s; "
          f"plan uses ix_runs_expired: {r['explain']['uses_ix_runs_expired']}")
    print(f"  sweep: {r['sweep_s']} s in {r['windows']} windows, {r['batches']} batches, {r['events_per_s']:,} events/s, "
          f"{r['runs_per_s']:,} runs/s; left after: {r['left']}")
    print(f"  {'per-node latency':<24}{'n':>8}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for name, lat in (("without deletion", off), ("during deletion", on)):
        print(f"  {name:<24}{lat['n']:>8}{lat.get('p50_ms', '-'):>10}{lat.get('p95_ms', '-'):>10}"
              f"{lat.get('max_ms', '-'):>10}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    admin_url, bench_url = urls()
    timer = threading.Timer(args.budget_s, lambda: os._exit(3))  # stops by itself, whatever happens
    timer.daemon = True
    timer.start()
    res: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/retention.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_at_start": os.getloadavg()},
        "setup": {"database": DB_NAME, "children_per_run": CHILDREN, "nodes_per_run": NODES,
                  "events_per_run": EVENTS_PER_RUN, "stream": "3 template nodes, one run at a time, in process"},
    }
    started = time.monotonic()
    try:
        fresh_database(admin_url, bench_url)
        with psycopg.connect(bench_url, autocommit=True) as conn:
            res["machine"]["postgres"] = conn.execute("SELECT version()").fetchone()[0]  # type: ignore[index]
        res["result"] = measure(args, bench_url)
    finally:
        timer.cancel()
        drop_database(admin_url)
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    res["elapsed_s"] = round(time.monotonic() - started, 1)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\n-> {RESULT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
