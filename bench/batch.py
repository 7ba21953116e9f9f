#!/usr/bin/env python
"""The `batch` node on real workers: `python bench/batch.py [--items 10000] [--flat-runs 1000]`.

Starts its own stack on loopback against the local PostgreSQL and Redis: one
`dramatiq workers --processes 2 --threads 8` group (bench/harness.py `WorkerGroup`, production
settings but no per-space cap, as the other benches) on a fresh `relayflow_bench_batch` database
and Redis database `--redis-db` (12 by default; FLUSHDB on that database only, before and after;
the database is dropped at the end). Runs are submitted through the engine's service, as the API
does; progress and completion are read from Postgres directly.

Measured, after a warm-up:
- flat: the two-node body as a plain workflow (`inputs.item`, `inputs.index`), `--flat-runs`
  runs submitted at once; per item = first submit → last run finished, over the runs;
- batch: one run whose `batch` node maps the same body over `--small-items` items
  (`--concurrency` at once); per item = submit → the run finished, over the items. Flat and
  batch alternate for `--rounds` rounds (the machine is shared: each ratio compares neighbours);
  the median ratio batch / flat per item is the batch's overhead (target ≤ 2×);
- a CPU probe (a fixed pure-Python loop) before and after each flat phase and every ~5 s of the
  big batch: the shared machine's speed, to tell its drift from a cost that grows with the items;
- then one batch of `--items` items: wall time, per item against the flat rounds around it;
- memory of the worker processes: RSS sampled every 0.2 s with the batch's progress (RSS when
  1,000 and when all items were done), and each process's peak (VmHWM) after each batch;
- whether the cost per item grows with the batch: the time of each tenth of the big batch's
  items (by when they finished), last tenth over second tenth.
The JSON goes under bench/results/ (`batch_<time>.json`) and a summary is printed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import redis as redis_lib  # noqa: E402

from bench.harness import PROCESSES, THREADS, BenchError, WorkerGroup, server_facts, worker_env  # noqa: E402
from bench.relayflow_bench import RelayflowDriver  # noqa: E402
from bench.web_stack import result_header, save_result  # noqa: E402

DB_NAME = "relayflow_bench_batch"
BODY = [{"id": "double", "type": "template", "config": {"template": "{{ item * 2 }}"}},
        {"id": "label", "type": "template", "config": {"template": "{{ index }}={{ double.text }}"}}]
FLAT = {"inputs": {"item": {"type": "integer", "required": True}, "index": {"type": "integer", "required": True}},
        "nodes": [{"id": "double", "type": "template", "config": {"template": "{{ inputs.item * 2 }}"}},
                  {"id": "label", "type": "template",
                   "config": {"template": "{{ inputs.index }}={{ double.text }}"}}],
        "outputs": {"label": "{{ label.text }}"}}


def batch_definition(concurrency: int) -> dict[str, Any]:
    """One batch node mapping the two-node body over `inputs.items`."""
    return {"inputs": {"items": {"type": "array", "required": True}},
            "nodes": [{"id": "each", "type": "batch",
                       "config": {"items": "{{ inputs.items }}", "concurrency": concurrency, "nodes": BODY,
                                  "outputs": {"label": "{{ label.text }}"}}}],
            "outputs": {"labels": "{{ each.label }}"}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000, help="items of the big batch, default 10000")
    parser.add_argument("--small-items", type=int, default=1_000, help="items of the first batch, default 1000")
    parser.add_argument("--concurrency", type=int, default=50, help="the batch's concurrency, default 50")
    parser.add_argument("--flat-runs", type=int, default=1_000, help="flat runs of the body, default 1000")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved flat/small-batch rounds, default 3")
    parser.add_argument("--redis-db", type=int, default=12, help="Redis database to use (flushed), default 12")
    parser.add_argument("--budget-s", type=float, default=1200.0, help="give up (cleanly) after this long")
    return parser.parse_args(argv)


# -- memory ----------------------------------------------------------------------------------------
def _status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def worker_pids(group: WorkerGroup) -> list[int]:
    """The worker processes of the group (not its main process, which only forks and waits)."""
    return sorted(pid for pid in group.pids() if pid != group.proc.pid)


def peaks_mb(group: WorkerGroup) -> dict[str, float]:
    """Each worker process's peak resident set (VmHWM) so far, MB."""
    return {str(pid): round((_status_kb(pid, "VmHWM") or 0) / 1024, 1) for pid in worker_pids(group)}


class RssSampler:
    """Samples the worker processes' RSS and the batch's progress every 0.2 s, in a thread."""

    def __init__(self, conn: psycopg.Connection[Any], run_id: str, group: WorkerGroup) -> None:
        self.conn, self.run_id, self.group = conn, run_id, group
        self.samples: list[tuple[float, int, dict[int, int]]] = []  # (t, done, pid → RSS kB)
        self.probes: list[tuple[int, float]] = []  # (done, cpu_probe_ms)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()  # the state at the end: the batch's last item may end between two samples

    def _sample(self) -> None:
        row = self.conn.execute("SELECT coalesce(children_done, 0) FROM node_runs WHERE run_id = %s "
                                "AND node_id = 'each'", (self.run_id,)).fetchone()
        rss = {pid: _status_kb(pid, "VmRSS") or 0 for pid in worker_pids(self.group)}
        self.samples.append((time.monotonic(), int(row[0]) if row else 0, rss))
        if len(self.samples) % 25 == 1:  # about every 5 s
            self.probes.append((int(row[0]) if row else 0, cpu_probe_ms()))

    def _loop(self) -> None:
        while not self.stop.wait(0.2):
            self._sample()

    def rss_at(self, done: int) -> dict[str, Any]:
        """RSS (MB) of each worker process at the first sample with at least `done` items done."""
        for _t, seen, rss in self.samples:
            if seen >= done:
                return {"done": seen, "max_process_mb": round(max(rss.values(), default=0) / 1024, 1),
                        "total_mb": round(sum(rss.values()) / 1024, 1)}
        return {"done": None}

    def max_mb(self) -> float:
        return round(max((max(r.values(), default=0) for _, _, r in self.samples), default=0) / 1024, 1)


# -- the measurements --------------------------------------------------------------------------------
def cpu_probe_ms() -> float:
    """Wall ms of a fixed pure-Python loop, median of 5: how fast the shared machine is right now
    (a phase that slows with it is the machine, not the engine)."""
    times = []
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for k in range(200_000):
            total += k * k
        times.append(1000 * (time.perf_counter() - started))
    return round(statistics.median(times), 2)


def wait_runs(conn: psycopg.Connection[Any], ids: list[str], group: WorkerGroup, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        done, bad = conn.execute("SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER "
                                 "(WHERE status IN ('failed', 'cancelled')) FROM runs WHERE id = ANY(%s::uuid[])",
                                 (ids,)).fetchone()  # type: ignore[misc]
        if bad:
            raise BenchError(f"{bad} runs failed; see {group.log_path}")
        if done == len(ids):
            return
        group.check()
        if time.monotonic() > deadline:
            raise BenchError(f"{len(ids) - done} runs not done within {timeout_s:.0f}s")
        time.sleep(0.05)


def flat(driver: RelayflowDriver, conn: psycopg.Connection[Any], wf: str, runs: int,
         group: WorkerGroup) -> dict[str, Any]:
    """`runs` flat runs of the body submitted at once (4 threads); per item over first submit → last end."""
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.time()
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda i: driver.service.submit_run(driver.space, wf, {"item": i, "index": i})["run_id"],
                            range(runs)))
    probe_before = cpu_probe_ms()
    wait_runs(conn, ids, group, timeout_s=max(120.0, runs * 0.5))
    end = conn.execute("SELECT extract(epoch FROM max(finished_at)) FROM runs WHERE id = ANY(%s::uuid[])",
                       (ids,)).fetchone()[0]  # type: ignore[index]
    wall = float(end) - t0
    return {"runs": runs, "wall_s": round(wall, 3), "per_item_ms": round(1000 * wall / runs, 3),
            "cpu_probe_ms": [probe_before, cpu_probe_ms()]}


def batch(driver: RelayflowDriver, conn: psycopg.Connection[Any], wf: str, items: int,
          group: WorkerGroup) -> dict[str, Any]:
    """One batch run of `items` items: wall time, outputs checked in item order, RSS, cost per tenth."""
    t0 = time.time()
    run_id = driver.service.submit_run(driver.space, wf, {"items": list(range(items))})["run_id"]
    with RssSampler(conn, run_id, group) as sampler:
        wait_runs(conn, [run_id], group, timeout_s=max(120.0, items * 0.2))
    ended, outputs = conn.execute("SELECT extract(epoch FROM finished_at), outputs FROM runs WHERE id = %s",
                                  (run_id,)).fetchone()  # type: ignore[misc]
    wall = float(ended) - t0
    if outputs["labels"] != [f"{i}={i * 2}" for i in range(items)]:
        raise BenchError(f"batch {run_id}: outputs missing or out of item order")
    finished = [float(r[0]) for r in conn.execute(
        "SELECT extract(epoch FROM finished_at) FROM runs WHERE parent_run_id = %s ORDER BY finished_at",
        (run_id,))]
    # The parts done once per batch, whose cost is O(items): inserting the items (submit → the
    # node parked), gathering their outputs (woken → succeeded), and ending the run.
    phases = dict(conn.execute(
        "SELECT type, extract(epoch FROM max(created_at)) FROM run_events WHERE run_id = %s "
        "AND type IN ('node.delegated', 'node.woken', 'node.succeeded', 'run.succeeded') GROUP BY type",
        (run_id,)).fetchall())
    once = {"submit_to_parked_s": round(float(phases["node.delegated"]) - t0, 3),
            "woken_to_gathered_s": round(float(phases["node.succeeded"]) - float(phases["node.woken"]), 3),
            "gathered_to_run_end_s": round(float(phases["run.succeeded"]) - float(phases["node.succeeded"]), 3)}
    tenth = max(1, items // 10)
    marks = [t0] + [finished[min(len(finished) - 1, k * tenth - 1)] for k in range(1, 11)]
    tenths = [round(1000 * (marks[k + 1] - marks[k]) / tenth, 3) for k in range(10)]
    return {"items": items, "run_id": run_id, "wall_s": round(wall, 3), "per_item_ms": round(1000 * wall / items, 3),
            "items_per_s": round(items / wall, 1), "outputs_in_item_order": True, "once": once,
            "per_item_ms_by_tenth": tenths,
            "last_over_second_tenth": round(tenths[-1] / tenths[1], 3) if tenths[1] else None,
            "rss_at_1000_done": sampler.rss_at(min(1000, items)), "rss_at_end": sampler.rss_at(items),
            "rss_max_process_mb": sampler.max_mb(), "peak_vmhwm_mb": peaks_mb(group),
            "cpu_probe_ms_by_done": sampler.probes}


# -- the stack ---------------------------------------------------------------------------------------
def _urls(redis_db: int) -> tuple[str, str, str]:
    pg = (os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres").replace(
        "postgresql+psycopg://", "postgresql://")
    rd = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    base = pg.rsplit("/", 1)[0]
    return f"{base}/postgres", f"{base}/{DB_NAME}", f"{rd.rsplit('/', 1)[0]}/{redis_db}"


def _fresh(admin_url: str, bench_url: str, redis_url: str) -> None:
    from engine.db import migrate
    from engine.tokens import ensure_local_token

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    migrate(bench_url)
    ensure_local_token(bench_url)
    redis_lib.Redis.from_url(redis_url).flushdb()


def _teardown(admin_url: str, redis_url: str) -> None:
    from engine import db

    for key, engine in list(db._engines.items()):
        engine.dispose()
        db._engines.pop(key, None)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    redis_lib.Redis.from_url(redis_url).flushdb()


def measure(args: argparse.Namespace, bench_url: str, redis_url: str, log_dir: Path) -> dict[str, Any]:
    queue = f"bench_batch_{uuid.uuid4().hex[:8]}"
    driver = RelayflowDriver(bench_url, redis_url, queue)
    conn = psycopg.connect(bench_url, autocommit=True)
    out: dict[str, Any] = {}
    try:
        with WorkerGroup("workers", "workers", worker_env(bench_url, redis_url, queue, 0), log_dir) as group:
            flat_wf = driver.service.create_workflow(driver.space, "flat", None, FLAT)["workflow_id"]
            batch_wf = driver.service.create_workflow(driver.space, "batch", None,
                                                      batch_definition(args.concurrency))["workflow_id"]
            batch(driver, conn, batch_wf, 100, group)  # warm-up: caches, pools, prepared statements
            flat(driver, conn, flat_wf, 100, group)
            # Interleaved rounds: the machine is shared, so each ratio compares neighbours.
            rounds = []
            for _ in range(args.rounds):
                flat_round = flat(driver, conn, flat_wf, args.flat_runs, group)
                batch_round = batch(driver, conn, batch_wf, args.small_items, group)
                rounds.append({"flat": flat_round, "batch": batch_round,
                               "ratio": round(batch_round["per_item_ms"] / flat_round["per_item_ms"], 3)})
            out["rounds"] = rounds
            out["batch_big"] = batch(driver, conn, batch_wf, args.items, group)
            out["flat_after"] = flat(driver, conn, flat_wf, args.flat_runs, group)  # the load may have moved
            group.check()
    finally:
        conn.close()
        driver.close()
    around = statistics.mean([rounds[-1]["flat"]["per_item_ms"], out["flat_after"]["per_item_ms"]])
    out["ratio_batch_over_flat_per_item"] = {
        "small_median": statistics.median(r["ratio"] for r in rounds),
        "big_vs_flat_around_it": round(out["batch_big"]["per_item_ms"] / around, 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    """Start the stack, measure, print, write the JSON, tear everything down."""
    args = parse_args(argv)
    admin_url, bench_url, redis_url = _urls(args.redis_db)
    log_dir = Path(tempfile.mkdtemp(prefix="relayflow-bench-batch-"))
    res = result_header("bench/batch.py", argv, {"processes": PROCESSES, "threads": THREADS,
                                                 "database": DB_NAME, "redis_db": args.redis_db,
                                                 "concurrency": args.concurrency})
    timer = threading.Timer(args.budget_s, lambda: os._exit(3))  # stops by itself, whatever happens
    timer.daemon = True
    timer.start()
    started = time.monotonic()
    try:
        _fresh(admin_url, bench_url, redis_url)
        res["machine"].update(server_facts(bench_url, redis_url))
        res["result"] = measure(args, bench_url, redis_url, log_dir)
    except BenchError as exc:
        print(f"benchmark failed: {exc} (logs in {log_dir})", file=sys.stderr)
        return 1
    finally:
        timer.cancel()
        _teardown(admin_url, redis_url)
    res["elapsed_s"] = round(time.monotonic() - started, 1)
    path = save_result(res, "batch")
    r = res["result"]
    for k, rnd in enumerate(r["rounds"]):
        print(f"round {k}: flat {rnd['flat']['per_item_ms']} ms/item, batch of {rnd['batch']['items']} "
              f"{rnd['batch']['per_item_ms']} ms/item, ratio {rnd['ratio']}, RSS {rnd['batch']['rss_at_end']}")
    b = r["batch_big"]
    print(f"batch {b['items']} items: wall {b['wall_s']} s, {b['per_item_ms']} ms/item, "
          f"RSS at 1000 done {b['rss_at_1000_done']}, at end {b['rss_at_end']}, VmHWM {b['peak_vmhwm_mb']} MB, "
          f"tenths {b['per_item_ms_by_tenth']}, once {b['once']}; flat after {r['flat_after']['per_item_ms']}")
    print(f"CPU probe (ms, a fixed loop; higher = slower machine): during the big batch by items done "
          f"{b['cpu_probe_ms_by_done']}; flat rounds {[x['flat']['cpu_probe_ms'] for x in r['rounds']]}, "
          f"flat after {r['flat_after']['cpu_probe_ms']}")
    print(f"ratio batch/flat per item: {r['ratio_batch_over_flat_per_item']} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
