"""Relayflow's hot path in this thread, with the production engines, measured per node.

The node side uses what a worker process builds (`workers/runtime.py`): `get_engine(settings,
pre_ping=False)`, `Store.from_engine`, `Executor`, a `DramatiqDispatcher` on `make_broker`. The
submit side uses what the API builds (`api/runtime.py`): `get_engine(settings)` and the
`Relayflow` service. Messages are really sent to Redis (on a queue nobody consumes), held by
the tests' in-process dispatcher (`engine/testing.py`) and executed here in order by its
`InlineWorker`, so nothing else runs on the bench database meanwhile.

Passes, each after a warm-up: one traced with libpq's PQtrace (round trips, statements, bytes,
Redis commands); one untraced (this thread's CPU, the Postgres backends' CPU, WAL, wall); one
under cProfile (this thread's CPU by package).
"""
from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench.counting import LibpqTracer, per_unit, profile_by_package, sched_ns, wal_by_relation, wal_lsn
from bench.harness import ROOT, BenchError, linear, summary_ms
from bench.monitors import count_redis_calls


class InProcess:
    """One set of production objects on the bench database; `close()` releases them."""

    def __init__(self, bench_url: str, redis_url: str, queue: str, workdir: Path) -> None:
        from engine.db import get_engine
        from engine.dispatch import DramatiqDispatcher, make_broker
        from engine.executor import Executor
        from engine.service import Relayflow
        from engine.settings import Settings
        from engine.store import Store
        from engine.testing import InlineWorker, MemoryDispatcher

        self.bench_url, self.redis_url = bench_url, redis_url
        self.meta = psycopg.connect(bench_url, autocommit=True)
        # the workers' settings in the throughput phase (harness.py): no per-space cap, so one space
        # uses the whole pool; `bench/hot_path.py` with RELAYFLOW_SPACE_MAX_RUNNING_NODES=8 measures a capped space
        settings = Settings(database_url=bench_url, redis_url=redis_url, queue_name=queue,
                            space_max_running_nodes=int(os.environ.get("RELAYFLOW_SPACE_MAX_RUNNING_NODES", "0")))
        self.worker_engine = get_engine(settings, pre_ping=False)  # as workers/runtime.py
        self.api_engine = get_engine(settings)                     # as api/runtime.py
        self.tracer = LibpqTracer(workdir)
        self.tracer.watch(self.worker_engine)
        self.tracer.watch(self.api_engine)
        broker = make_broker(settings)
        self.redis_calls = count_redis_calls(broker.client)
        self.queue = queue
        messages = MemoryDispatcher(forward=DramatiqDispatcher(broker, queue))
        self.service = Relayflow(Store.from_engine(self.api_engine), messages, settings)
        self.executor = Executor(Store.from_engine(self.worker_engine), messages, settings)
        self.worker = InlineWorker(self.executor, messages)
        self.broker = broker

    def close(self) -> None:
        self.tracer.unwatch()
        self.worker_engine.dispose()
        self.broker.client.close()
        self.meta.close()

    # -- building blocks ------------------------------------------------------------------------
    def _workflow(self, name: str, nodes: int, bounded: bool = False) -> str:
        from engine.tokens import DEFAULT_SPACE

        return self.service.create_workflow(DEFAULT_SPACE, name, None, linear(nodes, bounded))["workflow_id"]

    def _submit(self, workflow_id: str, runs: int) -> Callable[[], None]:
        from engine.tokens import DEFAULT_SPACE

        def work() -> None:
            for _ in range(runs):
                self.service.submit_run(DEFAULT_SPACE, workflow_id, {})
        return work

    def _drain(self) -> None:
        self.worker.drain()

    def _traced(self, work: Callable[[], None], units: int) -> dict[str, Any]:
        self.redis_calls.clear()
        self.tracer.start()
        work()
        out = per_unit(self.tracer.stop(), units)
        out["redis_commands"] = round(sum(self.redis_calls.values()) / units, 3)
        out["redis_by_command"] = {k: round(v / units, 3) for k, v in self.redis_calls.items()}
        return out

    def _cost(self, work: Callable[[], None], units: int) -> dict[str, Any]:
        backends = self.tracer.backend_pids()
        before = {pid: sched_ns(pid) for pid in backends}
        wal0, cpu0, t0 = wal_lsn(self.meta), time.thread_time(), time.perf_counter()
        work()
        wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
        wal = wal_lsn(self.meta) - wal0
        pg_ns = sum(sched_ns(pid) - before.get(pid, 0) for pid in backends | self.tracer.backend_pids())
        split = wal_by_relation(self.meta, wal0, wal0 + wal)
        ours = wal - split.get("other databases", 0) if split else wal  # the WAL position is server-wide
        return {"wall_ms": round(1000 * wall / units, 3), "python_cpu_ms": round(1000 * cpu / units, 3),
                "pg_backend_cpu_ms": round(pg_ns / 1e6 / units, 3), "wal_bytes": round(ours / units),
                "wal_bytes_server": round(wal / units),
                "wal_bytes_by_relation": {k: round(v / units) for k, v in (split or {}).items() if v >= units}}

    def _check_succeeded(self, workflow_id: str) -> None:
        bad = self.meta.execute("SELECT count(*) FROM runs WHERE workflow_id = %s AND status <> 'succeeded'",
                                (workflow_id,)).fetchone()[0]  # type: ignore[index]
        if bad:
            raise BenchError(f"{bad} in-process runs of {workflow_id} did not succeed")

    # -- measurements -----------------------------------------------------------------------------
    def relayflow(self, runs: int, nodes: int) -> dict[str, Any]:
        """Per node: the submit side (÷ nodes of the run), the node side, CPU/WAL, and the profile."""
        wf = self._workflow(f"inproc{nodes}", nodes)
        # Warm-up: catalogs of a new database, version caches, pools, psycopg's prepares (5th execution).
        self._traced(self._submit(wf, 2 * runs), 1)
        self._traced(self._drain, 1)
        out: dict[str, Any] = {"runs": runs, "nodes": nodes}
        out["submit"] = self._traced(self._submit(wf, runs), runs * nodes)
        out["execute"] = self._traced(self._drain, runs * nodes)
        self._submit(wf, 2 * runs)()
        out["cost"] = self._cost(self._drain, 2 * runs * nodes)
        out["submit_cost"] = self._cost(self._submit(wf, 2 * runs), 2 * runs * nodes)
        out["python_cpu_by_package_pct"] = profile_by_package(self._drain, ROOT)
        self._check_succeeded(wf)
        return out

    def scale(self, small_nodes: int, small_runs: int, big_nodes: int) -> dict[str, Any]:
        """Per-node cost of one `big_nodes` run against `small_runs` `small_nodes` runs: round trips
        (traced runs), then CPU and time per node along the run (untraced runs)."""
        from engine import templates

        def one(nodes: int, runs: int) -> dict[str, Any]:
            wf = self._workflow(f"scale{nodes}", nodes, bounded=True)
            self._traced(self._submit(wf, 1), 1)  # warm-up run: version cache, template cache
            self._traced(self._drain, 1)
            self._submit(wf, runs)()
            trace = self._traced(self._drain, runs * nodes)
            self._submit(wf, runs)()
            cache0 = templates._text_template.cache_info()
            times: list[float] = []

            def timed() -> None:
                while True:
                    started = time.perf_counter()
                    if not self.worker.run_next():
                        return
                    times.append(time.perf_counter() - started)

            cost = self._cost(timed, runs * nodes)
            cache1 = templates._text_template.cache_info()
            self._check_succeeded(wf)
            tenth = max(1, len(times) // 10)
            return {"nodes": nodes, "runs": runs, "per_node": summary_ms(times),
                    "cpu_ms_per_node": round(cost["python_cpu_ms"] + cost["pg_backend_cpu_ms"], 3), "cost": cost,
                    "tenths_median_ms": [round(1000 * statistics.median(times[i:i + tenth]), 3)
                                         for i in range(0, tenth * 10, tenth)],
                    "template_cache": {"hits": cache1.hits - cache0.hits, "misses": cache1.misses - cache0.misses,
                                       "maxsize": cache1.maxsize},
                    "round_trips_per_node": trace["round_trips"], "bytes_sent_per_node": trace["bytes_sent"]}

        small, big = one(small_nodes, small_runs), one(big_nodes, 1)
        return {"small": small, "big": big,
                "ratio_cpu_per_node_big_over_small": round(big["cpu_ms_per_node"] / small["cpu_ms_per_node"], 3),
                "ratio_per_node_big_over_small": round(big["per_node"]["median_ms"] / small["per_node"]["median_ms"], 3)}

    def naive(self, steps: int) -> dict[str, Any]:
        """The naive chain's step in this thread: one `engine.begin()` INSERT, then one enqueue."""
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker
        from sqlalchemy import create_engine, text

        from bench.comparators import INSERT_STEP_SQL, sqlalchemy_url

        engine = create_engine(sqlalchemy_url(self.bench_url), pool_size=10, max_overflow=10)  # as naive_chain.py
        self.tracer.watch(engine)
        broker = RedisBroker(url=self.redis_url)
        calls = count_redis_calls(broker.client)
        insert = text(INSERT_STEP_SQL)
        queue = self.queue

        def work(n: int) -> Callable[[], None]:
            def run() -> None:
                for k in range(n):
                    with engine.begin() as conn:
                        conn.execute(insert, {"chain": -1, "step": k, "output": json.dumps({"text": "x" * (k % 10 + 1)})})
                    broker.enqueue(dramatiq.Message(queue_name=queue, actor_name="bench_naive_step",
                                                    args=(-1, k, 0.0), kwargs={}, options={}))
            return run

        try:
            self.tracer.start()  # warm-up, traced so that psycopg's prepared statements are known by name
            work(20)()
            self.tracer.stop()
            calls.clear()
            self.tracer.start()
            work(steps)()
            out: dict[str, Any] = {"steps": steps, "execute": per_unit(self.tracer.stop(), steps)}
            out["execute"]["redis_commands"] = round(sum(calls.values()) / steps, 3)
            out["cost"] = self._cost(work(2 * steps), 2 * steps)
            return out
        finally:
            engine.dispose()
            broker.client.close()

