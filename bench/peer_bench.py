"""Driving the peers (`bench/comparators/celery_chain.py`, `bench/comparators/dbos_chain.py`) with real workers.

Same shape as the Dramatiq comparators: 2 worker processes x 8 threads, `plan.runs` chains of
`plan.nodes` nodes sent at once (median of `plan.rounds` rounds, CPU per round), unloaded latency
from `plan.latency_runs` chains one at a time, and root -> `plan.fanout_width` parallel nodes ->
join (`plan.fanout_runs` one at a time). They come from the optional `bench` extra
(`pip install -e '.[bench]'`); `missing_peers()` says which are not installed.
"""
from __future__ import annotations

import importlib.util
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from bench.comparator_bench import ChainDriver
from bench.counting import CpuMeter, wal_by_relation, wal_lsn
from bench.harness import (
    DB_NAME,
    POLL_S,
    PROCESSES,
    THREADS,
    BenchError,
    Plan,
    WorkerGroup,
    _with_path,
    fanout_summary,
    server_process_groups,
    summary_ms,
    worker_env,
)
from bench.monitors import RedisMonitor

PEERS = {"celery": "celery", "dbos": "dbos"}  # peer → the module the `bench` extra installs
DBOS_DB = f"{DB_NAME}_dbos"


def missing_peers() -> list[str]:
    """Peers whose package is not installed (`pip install -e '.[bench]'` installs them)."""
    return [name for name, module in PEERS.items() if importlib.util.find_spec(module) is None]


def _rounds(measure: Callable[[], dict[str, Any]], meter: CpuMeter, count: int) -> dict[str, Any]:
    rounds = []
    for _ in range(count):
        before = meter.snapshot()
        result = measure()
        result["cpu_s"] = meter.delta(before, meter.snapshot())
        rounds.append(result)
    return {"per_s": statistics.median(r["per_s"] for r in rounds), "rounds": rounds}


# -- Celery -----------------------------------------------------------------------------------------
class CeleryDriver(ChainDriver):
    """Sends Celery chains (and chords); completion is recorded in Redis by the last task."""

    def __init__(self, redis_url: str, queue: str) -> None:
        import redis as redis_lib

        from bench.comparators.celery_chain import make_app

        self.redis = redis_lib.Redis.from_url(redis_url)
        self.queue = queue
        self.app = make_app(redis_url)
        # The driver never waits on a result (the last task records completion, as the Dramatiq
        # comparators' does): it subscribes to no result channel, so it never unsubscribes either.
        consumer = self.app.backend.result_consumer
        consumer.consume_from = consumer.cancel_for = lambda *_a, **_k: None
        self.nodes = 10

    def close(self) -> None:
        self.redis.close()
        self.app.close()

    def _start(self, chain: int) -> None:
        from bench.comparators.celery_chain import chain_signature

        chain_signature(self.app, self.queue, chain, self.nodes, time.time()).apply_async()

    def fanout(self, width: int, runs: int, group: WorkerGroup) -> dict[str, Any]:
        from bench.comparators.celery_chain import fanout_signature

        self._reset()
        for i in range(runs + 1):  # the first is a warm-up, as Relayflow's
            fanout_signature(self.app, self.queue, width, time.time()).apply_async()
            self._wait(i + 1, group, timeout_s=60.0)
        return fanout_summary([float(x) for x in self.redis.lrange(f"{self.queue}:lat", 1, -1)], width)


def run_celery(plan: Plan, bench_url: str, redis_url: str, queue: str, log_dir: Path,
               meter_groups: dict[str, Callable[[], set[int]]]) -> dict[str, Any]:
    """Throughput rounds (with CPU), unloaded latency per task, fan-out, with two thread-pool workers."""
    from bench.comparators.celery_chain import READY_MARKER, worker_commands

    pool = os.environ.get("BENCH_CELERY_POOL", "threads")
    commands = worker_commands(queue, PROCESSES, THREADS, pool)
    driver = CeleryDriver(redis_url, queue)
    driver.nodes = plan.nodes
    env = worker_env(bench_url, redis_url, queue, plan.nodes)
    try:
        with WorkerGroup("celery", "", env, log_dir, commands=commands, ready_marker=READY_MARKER,
                         ready_count=len(commands)) as group:
            driver.throughput(10, plan.nodes, group)  # warm-up
            out = _rounds(lambda: driver.throughput(plan.runs, plan.nodes, group),
                          CpuMeter({"workers": group.pids, **meter_groups}), plan.rounds)
            out["latency_per_step"] = driver.latency(plan.latency_runs, plan.nodes, group)
            with RedisMonitor(redis_url) as mon:  # every client's commands, chains one at a time
                driver.latency(plan.monitor_runs, plan.nodes, group)
            out["redis"] = mon.report(plan.monitor_runs * plan.nodes)
            out["fanout"] = driver.fanout(plan.fanout_width, plan.fanout_runs, group)
            out["pool"] = pool
            group.check()
            return out
    finally:
        driver.close()


# -- DBOS -------------------------------------------------------------------------------------------
def fresh_dbos_database(admin_url: str) -> str:
    """Drop and create DBOS's own database on the bench's server, create its system tables; its URL."""
    from dbos import DBOS

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DBOS_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DBOS_DB}")
    url = _with_path(admin_url, DBOS_DB)
    DBOS.migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        try:  # WAL by relation (optional: PostgreSQL 15+ contrib), as for the bench database
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        except psycopg.Error:
            pass
    return url


def drop_dbos_database(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DBOS_DB} WITH (FORCE)")


def _wal_per_unit(conn: psycopg.Connection[Any], wal0: int, units: int) -> dict[str, Any]:
    """WAL written since `wal0` per unit, this database's only (the enqueue included), by relation."""
    wal = wal_lsn(conn) - wal0
    split = wal_by_relation(conn, wal0, wal0 + wal) or {}
    ours = wal - split.get("other databases", 0)
    return {"bytes": round(ours / units), "by_relation": {k: round(v / units) for k, v in split.items() if v >= units}}


class DbosDriver:
    """Enqueues workflows with `DBOSClient` (4 threads, as Relayflow's runs are submitted) and reads
    their status from `dbos.workflow_status` every 50 ms."""

    def __init__(self, dbos_url: str, queue: str) -> None:
        from dbos import DBOSClient

        from bench.comparators.dbos_chain import APP_NAME

        self.client = DBOSClient(system_database_url=dbos_url, application_name=APP_NAME)
        self.poll = psycopg.connect(dbos_url, autocommit=True)
        self.queue = queue
        self.batch = 0

    def close(self) -> None:
        self.poll.close()
        self.client.destroy()

    def enqueue(self, workflow: str, args_list: list[tuple[Any, ...]]) -> list[str]:
        self.batch += 1
        ids = [f"{self.queue}-{self.batch}-{i}" for i in range(len(args_list))]

        def one(i: int) -> None:
            self.client.enqueue({"workflow_name": workflow, "queue_name": self.queue, "workflow_id": ids[i]},
                                *args_list[i])

        if len(ids) == 1:
            one(0)
        else:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(one, range(len(ids))))
        return ids

    def wait(self, ids: list[str], group: WorkerGroup, timeout_s: float) -> list[tuple[float, float, float]]:
        """(created, dequeued, finished) epoch seconds of each workflow, once all have succeeded."""
        deadline = time.monotonic() + timeout_s
        pending = list(ids)
        while True:  # only the workflows not yet seen ended, as bench/relayflow_bench.py `wait`
            ended = self.poll.execute(
                "SELECT workflow_uuid, status FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s) "
                "AND status IN ('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')",
                (pending,)).fetchall()
            if bad := sum(1 for _id, status in ended if status != "SUCCESS"):
                raise BenchError(f"{bad} DBOS workflows failed; see {group.log_path}")
            gone = {workflow_id for workflow_id, _status in ended}
            pending = [workflow_id for workflow_id in pending if workflow_id not in gone]
            if not pending:
                break
            group.check()
            if time.monotonic() > deadline:
                raise BenchError(f"DBOS: {len(pending)} workflows not done within {timeout_s:.0f}s")
            time.sleep(POLL_S)
        rows = self.poll.execute(
            "SELECT created_at, coalesce(started_at_epoch_ms, created_at), updated_at "
            "FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)", (ids,)).fetchall()
        return [(c / 1000, s / 1000, u / 1000) for c, s, u in rows]

    def throughput(self, runs: int, nodes: int, group: WorkerGroup) -> dict[str, Any]:
        """Enqueue `runs` workflows at once; wall = first enqueue → last `updated_at` (its SUCCESS)."""
        from bench.comparators.dbos_chain import CHAIN_WORKFLOW

        t0 = time.time()
        ids = self.enqueue(CHAIN_WORKFLOW, [(nodes,)] * runs)
        sent_s = time.time() - t0
        times = self.wait(ids, group, timeout_s=max(60.0, runs * nodes / 20))
        wall = max(u for _c, _s, u in times) - t0
        return {"wall_s": round(wall, 3), "per_s": round(runs * nodes / wall, 1), "send_s": round(sent_s, 3)}

    def latency(self, runs: int, nodes: int, group: WorkerGroup) -> dict[str, Any]:
        """One workflow at a time: (SUCCESS − enqueued) / nodes, and (SUCCESS − dequeued) / nodes."""
        from bench.comparators.dbos_chain import CHAIN_WORKFLOW

        times = []
        for _ in range(runs):
            times += self.wait(self.enqueue(CHAIN_WORKFLOW, [(nodes,)]), group, 30.0)
        return {"per_step": summary_ms([(u - c) / nodes for c, _s, u in times]),
                "per_step_after_dequeue": summary_ms([(u - s) / nodes for _c, s, u in times]),
                "enqueue_to_dequeue": summary_ms([s - c for c, s, _u in times])}

    def fanout(self, width: int, runs: int, group: WorkerGroup) -> dict[str, Any]:
        from bench.comparators.dbos_chain import FANOUT_WORKFLOW

        walls = []
        for _ in range(runs + 1):  # the first is a warm-up, as Relayflow's
            walls += [u - c for c, _s, u in self.wait(self.enqueue(FANOUT_WORKFLOW, [(width,)]), group, 120.0)]
        return fanout_summary(walls[1:], width)


def run_dbos(plan: Plan, admin_url: str, bench_url: str, redis_url: str, queue: str, log_dir: Path,
             ) -> dict[str, Any]:
    """Throughput rounds (with CPU), unloaded latency per step, fan-out, with two DBOS worker processes."""
    from bench.comparators.dbos_chain import READY_MARKER, worker_commands

    dbos_url = fresh_dbos_database(admin_url)
    driver = DbosDriver(dbos_url, queue)
    env = worker_env(bench_url, redis_url, queue, plan.nodes)
    env["DBOS_SYSTEM_DATABASE_URL"] = dbos_url
    env["BENCH_DBOS_CONCURRENCY"] = str(THREADS)
    try:
        with WorkerGroup("dbos", "", env, log_dir, commands=worker_commands(PROCESSES),
                         ready_marker=READY_MARKER) as group:
            driver.throughput(10, plan.nodes, group)  # warm-up
            meter = CpuMeter({"workers": group.pids, **server_process_groups(dbos_url, redis_url)})
            out = _rounds(lambda: driver.throughput(plan.runs, plan.nodes, group), meter, plan.rounds)
            wal0 = wal_lsn(driver.poll)
            out["latency"] = driver.latency(plan.latency_runs, plan.nodes, group)
            out["latency_per_step"] = out["latency"]["per_step"]
            out["wal_per_step"] = _wal_per_unit(driver.poll, wal0, plan.latency_runs * plan.nodes)
            out["fanout"] = driver.fanout(plan.fanout_width, plan.fanout_runs, group)
            out["poll_interval_s"] = float(env.get("BENCH_DBOS_POLL_S", "0.1"))
            group.check()
            return out
    finally:
        driver.close()
        drop_dbos_database(admin_url)


def main(argv: list[str] | None = None) -> int:
    """One peer alone (`python -m bench.peer_bench dbos --quick`, from the checkout), e.g. to try a setting such as
    `BENCH_DBOS_POLL_S` or `BENCH_CELERY_POOL`; `bench/run_all.py` is the sitting that compares."""
    import argparse
    import json
    import shutil
    import tempfile

    from bench.harness import FULL, QUICK, flush_redis, server_urls

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.peer in missing_peers():
        print(f"{args.peer} is not installed (pip install -e '.[bench]')")
        return 1
    admin_url, bench_url, redis_url = server_urls()
    plan, log_dir = (QUICK if args.quick else FULL), Path(tempfile.mkdtemp(prefix="relayflow-peer-"))
    flush_redis(redis_url)
    try:
        if args.peer == "celery":
            out = run_celery(plan, admin_url, redis_url, "bench_celery_solo", log_dir,
                             server_process_groups(admin_url, redis_url))
        else:
            out = run_dbos(plan, admin_url, bench_url, redis_url, "bench_dbos_solo", log_dir)
    except BenchError as exc:
        print(f"failed: {exc} (logs in {log_dir})")
        return 1
    finally:
        flush_redis(redis_url)
    print(json.dumps({k: v for k, v in out.items() if k != "rounds"} | {"rounds": [r["per_s"] for r in out["rounds"]]},
                     indent=1))
    shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
