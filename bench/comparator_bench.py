"""Driving the comparators (`bench/comparators/`) with real workers: throughput, latency, CPU, Redis."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
import redis as redis_lib
from dramatiq.brokers.redis import RedisBroker

from bench.counting import CpuMeter
from bench.harness import POLL_S, BenchError, Plan, WorkerGroup, fanout_summary, summary_ms, worker_env
from bench.monitors import RedisMonitor, WaitSampler

COMPARATORS = {  # name → (worker module, actor)
    "bare_chain": ("bench.comparators.bare_chain", "bench_bare_step"),
    "naive_chain": ("bench.comparators.naive_chain", "bench_naive_step"),
}
FANOUT_ACTORS = {"naive_chain": "bench_naive_fan"}  # comparators with a fan-out → its actor


class ChainDriver:
    """Starts comparator chains and reads their completion records from Redis."""

    def __init__(self, redis_url: str, queue: str, actor_name: str, fan_actor: str | None = None) -> None:
        self.redis = redis_lib.Redis.from_url(redis_url)
        self.broker = RedisBroker(url=redis_url)
        self.broker.declare_queue(queue)
        self.queue = queue
        self.actor_name = actor_name
        self.fan_actor = fan_actor
        self.fans = 0  # fan-outs started, so each has its own counter row

    def close(self) -> None:
        self.redis.close()
        self.broker.client.close()

    def _reset(self) -> None:
        self.redis.delete(f"{self.queue}:done", f"{self.queue}:ends", f"{self.queue}:lat")

    def _start(self, chain: int) -> None:
        self.broker.enqueue(dramatiq.Message(queue_name=self.queue, actor_name=self.actor_name,
                                             args=(chain, 0, time.time()), kwargs={}, options={}))

    def _wait(self, count: int, group: WorkerGroup, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while int(self.redis.get(f"{self.queue}:done") or 0) < count:
            group.check()
            if time.monotonic() > deadline:
                raise BenchError(f"{group.name}: chains not done within {timeout_s:.0f}s")
            time.sleep(POLL_S)

    def throughput(self, chains: int, steps: int, group: WorkerGroup) -> dict[str, Any]:
        """Send `chains` chains at once; wall = first send → last recorded end."""
        self._reset()
        t0 = time.time()
        for i in range(chains):
            self._start(i)
        sent_s = time.time() - t0
        self._wait(chains, group, timeout_s=max(60.0, chains * steps / 20))
        wall = max(float(x) for x in self.redis.lrange(f"{self.queue}:ends", 0, -1)) - t0
        return {"wall_s": round(wall, 3), "per_s": round(chains * steps / wall, 1), "send_s": round(sent_s, 3)}

    def latency(self, chains: int, steps: int, group: WorkerGroup) -> dict[str, Any]:
        """One chain at a time; per-step latency = chain duration / steps."""
        self._reset()
        for i in range(chains):
            self._start(i)
            self._wait(i + 1, group, timeout_s=30.0)
        return summary_ms([float(x) / steps for x in self.redis.lrange(f"{self.queue}:lat", 0, -1)])

    def fanout(self, width: int, runs: int, group: WorkerGroup) -> dict[str, Any]:
        """root → `width` parallel steps → join, one at a time after a warm-up; wall = send → join recorded."""
        if self.fan_actor is None:
            raise BenchError(f"{group.name}: no fan-out actor")
        self._reset()
        for i in range(runs + 1):  # the first is a warm-up, as Relayflow's
            self.fans += 1
            self.broker.enqueue(dramatiq.Message(queue_name=self.queue, actor_name=self.fan_actor,
                                                 args=(self.fans, "root", 0, width, time.time()), kwargs={},
                                                 options={}))
            self._wait(i + 1, group, timeout_s=60.0)
        return fanout_summary([float(x) for x in self.redis.lrange(f"{self.queue}:lat", 1, -1)], width)


def run_comparator(name: str, plan: Plan, bench_url: str, redis_url: str, queue: str, log_dir: Path,
                   meter_groups: dict[str, Callable[[], set[int]]], monitor: bool = False,
                   waits: bool = False) -> dict[str, Any]:
    """Throughput rounds (with CPU), unloaded latency, optionally Redis commands and wait events, and
    the fan-out (`plan.fanout_width`, `plan.fanout_runs`) of a comparator that has one (`FANOUT_ACTORS`)."""
    module, actor = COMPARATORS[name]
    driver = ChainDriver(redis_url, queue, actor, FANOUT_ACTORS.get(name))
    try:
        with WorkerGroup(name, module, worker_env(bench_url, redis_url, queue, plan.nodes), log_dir) as group:
            driver.throughput(10, plan.nodes, group)  # warm-up: connections, code paths
            meter = CpuMeter({"workers": group.pids, **meter_groups})
            rounds = []
            for _ in range(plan.rounds):
                before = meter.snapshot()
                result = driver.throughput(plan.runs, plan.nodes, group)
                result["cpu_s"] = meter.delta(before, meter.snapshot())
                rounds.append(result)
            out: dict[str, Any] = {"per_s": statistics.median(r["per_s"] for r in rounds), "rounds": rounds,
                                   "latency_per_step": driver.latency(plan.latency_runs, plan.nodes, group)}
            if waits:  # an extra round, not in the median
                with WaitSampler(bench_url) as sampler:
                    out["waits_round"] = driver.throughput(plan.runs, plan.nodes, group)
                out["pg_waits"] = sampler.report()
            if monitor:
                with RedisMonitor(redis_url) as mon:
                    driver.latency(plan.monitor_runs, plan.nodes, group)
                out["redis"] = mon.report(plan.monitor_runs * plan.nodes)
            if driver.fan_actor is not None:
                out["fanout"] = driver.fanout(plan.fanout_width, plan.fanout_runs, group)
            group.check()
            return out
    finally:
        driver.close()
