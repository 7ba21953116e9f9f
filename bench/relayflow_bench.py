"""Relayflow with real workers (`dramatiq workers --processes 2 --threads 8`).

Runs are submitted through the service, as the API does (`Relayflow.submit_run` on
`get_engine(settings)`); completion is read from the `runs` table directly every 50 ms, so the
driver adds no load through the HTTP API.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from bench.counting import CpuMeter
from bench.harness import (
    POLL_S,
    WARM_MARKER,
    BenchError,
    Plan,
    WorkerGroup,
    fanout,
    fanout_summary,
    linear,
    summary_ms,
    worker_env,
)
from bench.monitors import RedisMonitor, WaitSampler


class RelayflowDriver:
    """Creates workflows and submits runs with the engine's service; polls Postgres directly."""

    def __init__(self, bench_url: str, redis_url: str, queue: str) -> None:
        from engine.db import get_engine
        from engine.dispatch import DramatiqDispatcher, make_broker
        from engine.service import Relayflow
        from engine.settings import Settings
        from engine.store import Store
        from engine.tokens import DEFAULT_SPACE

        settings = Settings(database_url=bench_url, redis_url=redis_url, queue_name=queue)
        self.broker = make_broker(settings)
        self.service = Relayflow(Store.from_engine(get_engine(settings)), DramatiqDispatcher(self.broker, queue),
                                 settings)
        self.space = DEFAULT_SPACE
        self.poll = psycopg.connect(bench_url, autocommit=True)

    def close(self) -> None:
        self.poll.close()
        self.broker.client.close()

    def workflow(self, nodes: int, bounded: bool = False) -> str:
        return self.service.create_workflow(self.space, f"linear{nodes}", None, linear(nodes, bounded))["workflow_id"]

    def submit(self, workflow_id: str, count: int, threads: int = 4) -> list[str]:
        if count == 1:
            return [self.service.submit_run(self.space, workflow_id, {})["run_id"]]
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda _: self.service.submit_run(self.space, workflow_id, {})["run_id"],
                                 range(count)))

    def wait(self, run_ids: list[str], group: WorkerGroup, timeout_s: float) -> None:
        """Until every run has succeeded. Each poll reads only the runs not yet seen ended: a poll of
        all of them (a round's 200, every 50 ms) was ~1.5 ms of the server's CPU, 3% of a core taken
        from the system under test."""
        deadline = time.monotonic() + timeout_s
        pending = list(run_ids)
        while True:
            ended = self.poll.execute(
                "SELECT id::text, status FROM runs WHERE id = ANY(%s::uuid[]) "
                "AND status IN ('succeeded', 'failed', 'cancelled', 'interrupted')", (pending,)).fetchall()
            if bad := sum(1 for _id, status in ended if status != "succeeded"):
                raise BenchError(f"{bad} Relayflow runs failed; see {group.log_path}")
            gone = {run_id for run_id, _status in ended}
            pending = [run_id for run_id in pending if run_id not in gone]
            if not pending:
                return
            group.check()
            if time.monotonic() > deadline:
                raise BenchError(f"Relayflow: {len(pending)} runs not done within {timeout_s:.0f}s")
            time.sleep(POLL_S)

    def throughput(self, workflow_id: str, runs: int, nodes: int, group: WorkerGroup) -> dict[str, Any]:
        """Submit `runs` runs at once (4 threads); wall = first submit → last `finished_at`."""
        t0 = time.time()
        ids = self.submit(workflow_id, runs)
        submit_s = time.time() - t0
        self.wait(ids, group, timeout_s=max(60.0, runs * nodes / 20))
        end = self.poll.execute("SELECT extract(epoch FROM max(finished_at)) FROM runs WHERE id = ANY(%s::uuid[])",
                                (ids,)).fetchone()[0]  # type: ignore[index]
        wall = float(end) - t0
        return {"wall_s": round(wall, 3), "per_s": round(runs * nodes / wall, 1), "submit_s": round(submit_s, 3)}

    def sequential(self, workflow_id: str, runs: int, group: WorkerGroup, timeout_s: float = 30.0) -> list[str]:
        ids: list[str] = []
        for _ in range(runs):
            ids += self.submit(workflow_id, 1)
            self.wait(ids[-1:], group, timeout_s)
        return ids

    def timings(self, run_ids: list[str], nodes: int) -> dict[str, Any]:
        """Per-node latency of each run, and its parts from the node rows (claim → commit, hops)."""
        runs = self.poll.execute(
            "SELECT extract(epoch FROM finished_at - created_at) FROM runs WHERE id = ANY(%s::uuid[])",
            (run_ids,)).fetchall()
        rows = self.poll.execute("""
            SELECT n.run_id, extract(epoch FROM n.started_at), extract(epoch FROM n.finished_at),
                   extract(epoch FROM r.created_at), extract(epoch FROM r.finished_at)
              FROM node_runs n JOIN runs r ON r.id = n.run_id
             WHERE n.run_id = ANY(%s::uuid[]) ORDER BY n.run_id, n.started_at""", (run_ids,)).fetchall()
        by_run: dict[Any, list[Any]] = {}
        for row in rows:
            by_run.setdefault(row[0], []).append([float(x) for x in row[1:]])
        inside, hops, first, last = [], [], [], []
        for chain in by_run.values():
            first.append(chain[0][0] - chain[0][2])
            last.append(chain[-1][3] - chain[-1][1])
            for i, (started, finished, _c, _f) in enumerate(chain):
                inside.append(finished - started)
                if i:
                    hops.append(started - chain[i - 1][1])
        return {"per_node": summary_ms([float(d) / nodes for (d,) in runs]),
                "node_claim_to_commit": summary_ms(inside),
                "hop_commit_to_next_claim": summary_ms(hops) if hops else None,
                "submit_to_first_claim": summary_ms(first), "last_commit_to_run_succeeded": summary_ms(last)}

    def fanout(self, width: int, runs: int, group: WorkerGroup) -> dict[str, Any]:
        """root → `width` parallel nodes → join, `runs` runs one at a time: submit → `finished_at`."""
        wf = self.service.create_workflow(self.space, f"fanout{width}", None, fanout(width))["workflow_id"]
        self.sequential(wf, 1, group, timeout_s=60.0)  # warm-up: the join's template, the version cache
        ids = self.sequential(wf, runs, group, timeout_s=60.0)
        walls = self.poll.execute(
            "SELECT extract(epoch FROM finished_at - created_at) FROM runs WHERE id = ANY(%s::uuid[])",
            (ids,)).fetchall()
        return fanout_summary([float(w) for (w,) in walls], width)

    def claim_to_commit_slice(self, run_id: str, lo: int, hi: int) -> dict[str, Any]:
        """Claim → commit time of the nodes n<lo> … n<hi-1> of one run."""
        rows = self.poll.execute("""
            SELECT extract(epoch FROM finished_at - started_at) FROM node_runs
             WHERE run_id = %s AND substr(node_id, 2)::int >= %s AND substr(node_id, 2)::int < %s""",
                                 (run_id, lo, hi)).fetchall()
        return summary_ms([float(r[0]) for r in rows])


def _throughput_rounds(driver: RelayflowDriver, wf: str, plan: Plan, group: WorkerGroup,
                       meter: CpuMeter) -> dict[str, Any]:
    rounds = []
    for _ in range(plan.rounds):
        before = meter.snapshot()
        result = driver.throughput(wf, plan.runs, plan.nodes, group)
        result["cpu_s"] = meter.delta(before, meter.snapshot())
        rounds.append(result)
    return {"per_s": statistics.median(r["per_s"] for r in rounds), "rounds": rounds}


def run_relayflow(plan: Plan, bench_url: str, redis_url: str, queue: str, log_dir: Path,
                  meter_groups: dict[str, Callable[[], set[int]]], module: str = "workers",
                  variant: dict[str, str] | None = None, name: str | None = None) -> dict[str, Any]:
    """Throughput, latency, wait events, Redis commands and the scale check with `dramatiq workers`.

    With another `module` (an experiment's worker entry point) or a `variant` (settings of the
    workers, e.g. RELAYFLOW_CLAIM_PURE_NODES), only throughput and latency.
    """
    driver = RelayflowDriver(bench_url, redis_url, queue)
    name = name or ("relayflow" if module == "workers" else module.rsplit(".", 1)[-1])
    env = worker_env(bench_url, redis_url, queue, plan.nodes) | (variant or {})
    try:
        # Measured once every process is warm (LiteLLM imported, RELAYFLOW_WORKER_WARM_LLM): the
        # import is a start-up cost of ~6 s of CPU per process, reported as `warm_s`, not per node.
        with WorkerGroup(name, module, env, log_dir, ready_marker=WARM_MARKER, ready_timeout_s=180.0) as group:
            wf = driver.workflow(plan.nodes)
            driver.wait(driver.submit(wf, 20), group, 60.0)  # warm-up: version caches, pools, prepared statements
            out = _throughput_rounds(driver, wf, plan, group, CpuMeter({"workers": group.pids, **meter_groups}))
            out["warm_s"] = group.ready_s
            out["latency"] = driver.timings(driver.sequential(wf, plan.latency_runs, group), plan.nodes)
            if module != "workers" or variant:
                group.check()
                return out
            with WaitSampler(bench_url) as sampler:  # an extra round, not in the median
                out["waits_round"] = driver.throughput(wf, plan.runs, plan.nodes, group)
            out["pg_waits"] = sampler.report()
            with RedisMonitor(redis_url) as mon:
                driver.sequential(wf, plan.monitor_runs, group)
            out["redis"] = mon.report(plan.monitor_runs * plan.nodes)
            out["scale"] = _scale(driver, plan, group)
            out["fanout"] = driver.fanout(plan.fanout_width, plan.fanout_runs, group)
            group.check()
            return out
    finally:
        driver.close()


def _scale(driver: RelayflowDriver, plan: Plan, group: WorkerGroup) -> dict[str, Any]:
    """The same bounded-output template chain: 10-node runs against one `scale_nodes` run.

    The long run is its workflow's first, so each worker process compiles the templates it meets
    (the 10-node runs compile theirs in the first run); the in-process check is the warm case.
    """
    small, big = driver.workflow(10, bounded=True), driver.workflow(plan.scale_nodes, bounded=True)
    small_ids = driver.sequential(small, plan.scale_small_runs, group)
    big_id = driver.sequential(big, 1, group, timeout_s=max(120.0, plan.scale_nodes * 0.2))[0]
    small_t, big_t = driver.timings(small_ids, 10), driver.timings([big_id], plan.scale_nodes)
    tenth = max(1, plan.scale_nodes // 10)
    return {
        "small_nodes": 10, "big_nodes": plan.scale_nodes, "small": small_t, "big": big_t,
        "big_first_tenth_claim_to_commit": driver.claim_to_commit_slice(big_id, 0, tenth),
        "big_last_tenth_claim_to_commit": driver.claim_to_commit_slice(big_id, plan.scale_nodes - tenth,
                                                                       plan.scale_nodes),
        "ratio_per_node_big_over_small": round(big_t["per_node"]["median_ms"] / small_t["per_node"]["median_ms"], 3),
        "ratio_claim_to_commit_big_over_small": round(
            big_t["node_claim_to_commit"]["median_ms"] / small_t["node_claim_to_commit"]["median_ms"], 3),
    }
