"""Setup and teardown for the benchmark: servers, the bench database, Redis, worker process groups.

Everything the benchmark touches is its own: the database `relayflow_bench` (dropped if left
over, created, migrated with `engine.db.migrate`, dropped at the end), Redis database 14
(cleared with FLUSHDB on that database only) and queue names `bench_<system>_<random>`.
`BENCH_DB_NAME` and `BENCH_REDIS_DB` move both, so two sittings on one machine do not collide.
"""
from __future__ import annotations

import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis as redis_lib

ROOT = Path(__file__).resolve().parent.parent
# Overridable so that two benchmarks on one machine do not drop each other's database
DB_NAME = os.environ.get("BENCH_DB_NAME") or os.environ.get("RELAYFLOW_BENCH_DB", "relayflow_bench")
if not DB_NAME.replace("_", "").isalnum():  # it is spliced into DROP DATABASE
    raise ValueError(f"BENCH_DB_NAME must be a plain identifier, not {DB_NAME!r}")
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB") or os.environ.get("RELAYFLOW_BENCH_REDIS_DB", "14"))
PROCESSES, THREADS = 2, 8
POLL_S = 0.05
# What a Relayflow worker process logs once LiteLLM is imported (workers/runtime.py `_warm_llm`)
WARM_MARKER = b"worker.llm_warm"


class BenchError(RuntimeError):
    """The benchmark cannot go on (a worker group died, a run failed, a timeout passed)."""


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    runs: int              # runs (chains) in flight for the throughput measurements
    nodes: int             # nodes per run (steps per chain)
    rounds: int            # throughput rounds per system (the median is reported)
    latency_runs: int      # sequential runs for the unloaded latency
    scale_nodes: int       # the long linear workflow of the scale check
    scale_small_runs: int  # 10-node runs to compare it with
    rt_runs: int           # in-process runs whose round trips are counted
    monitor_runs: int      # sequential runs under Redis MONITOR
    fanout_width: int = 100  # root -> this many parallel nodes -> join
    fanout_runs: int = 5     # fan-out runs, one at a time


FULL = Plan(runs=200, nodes=10, rounds=3, latency_runs=20, scale_nodes=1000, scale_small_runs=5,
            rt_runs=5, monitor_runs=5)
QUICK = Plan(runs=50, nodes=10, rounds=1, latency_runs=5, scale_nodes=200, scale_small_runs=3,
             rt_runs=3, monitor_runs=3, fanout_runs=1)


# -- servers -------------------------------------------------------------------------------------
def libpq_url(url: str) -> str:
    """A libpq URL (for psycopg.connect) from any SQLAlchemy or Heroku spelling."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + path, parts.query, parts.fragment))


def server_urls() -> tuple[str, str, str]:
    """(admin database URL, bench database URL, bench Redis URL); local servers unless the env says otherwise."""
    pg = libpq_url(os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres")
    rd = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    return _with_path(pg, "postgres"), _with_path(pg, DB_NAME), _with_path(rd, str(REDIS_DB))


def fresh_database(admin_url: str, bench_url: str) -> None:
    """Drop and re-create the bench database, migrate it, add the local token and the naive chain's table."""
    from bench.comparators import create_table
    from engine.db import migrate
    from engine.tokens import ensure_local_token

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    migrate(bench_url)
    with psycopg.connect(bench_url, autocommit=True) as conn:
        try:  # WAL by relation, in process (optional: PostgreSQL 15+ contrib)
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        except psycopg.Error:
            pass
    ensure_local_token(bench_url)
    create_table(bench_url)


def drop_database(admin_url: str) -> None:
    """Close this process's pools on the bench database, then drop it."""
    from engine import db

    for key, engine in list(db._engines.items()):
        engine.dispose()
        db._engines.pop(key, None)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


def flush_redis(redis_url: str) -> None:
    """FLUSHDB on the bench's own Redis database (the URL always names `REDIS_DB`)."""
    client = redis_lib.Redis.from_url(redis_url)
    try:
        if client.connection_pool.connection_kwargs.get("db") != REDIS_DB:
            raise BenchError(f"refusing to flush a Redis database other than {REDIS_DB}")
        client.flushdb()
    finally:
        client.close()


def server_facts(bench_url: str, redis_url: str) -> dict[str, Any]:
    """Versions and durability settings of the servers."""
    with psycopg.connect(bench_url, autocommit=True) as conn:
        facts = {"postgres": conn.execute("SELECT version()").fetchone()[0],  # type: ignore[index]
                 "synchronous_commit": conn.execute("SHOW synchronous_commit").fetchone()[0],  # type: ignore[index]
                 "fsync": conn.execute("SHOW fsync").fetchone()[0]}  # type: ignore[index]
    client = redis_lib.Redis.from_url(redis_url)
    facts["redis"] = client.info("server").get("redis_version")
    client.close()
    return facts


# -- processes ------------------------------------------------------------------------------------
def proc_table() -> dict[int, tuple[int, int]]:
    """pid → (ppid, process group) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                rest = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            table[int(entry)] = (int(rest[1]), int(rest[2]))
    return table


def server_process_groups(bench_url: str, redis_url: str) -> dict[str, Callable[[], set[int]]]:
    """Process sets to meter besides the workers: this driver, PostgreSQL (if local: the bench
    database's client backends, and every other server process), Redis (if local)."""
    groups: dict[str, Callable[[], set[int]]] = {"driver": lambda: {os.getpid()}}
    with psycopg.connect(bench_url, autocommit=True) as conn:  # read /proc while this backend lives
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        postmaster = proc_table().get(backend, (None, None))[0]
    if postmaster:
        def bench_backends() -> set[int]:
            with psycopg.connect(bench_url, autocommit=True) as conn:
                return {r[0] for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")}

        def other_postgres() -> set[int]:  # postmaster, WAL writer, checkpointer, autovacuum, other databases
            server = {pid for pid, (ppid, _g) in proc_table().items() if pid == postmaster or ppid == postmaster}
            return server - bench_backends()

        groups["postgres"] = bench_backends
        groups["postgres_other"] = other_postgres
    client = redis_lib.Redis.from_url(redis_url)
    redis_pid = client.info("server").get("process_id")
    client.close()
    if redis_pid and Path(f"/proc/{redis_pid}").exists():
        groups["redis"] = lambda: {int(redis_pid)}
    return groups


def worker_env(bench_url: str, redis_url: str, queue: str, steps: int) -> dict[str, str]:
    """Environment of a worker group: like tests/conftest.py `settings_env`, production defaults otherwise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYFLOW_")}
    env.update({
        "DATABASE_URL": bench_url, "REDIS_URL": redis_url, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "PYTHONUNBUFFERED": "1", "RELAYFLOW_QUEUE_NAME": queue, "RELAYFLOW_WORKER_THREADS": str(THREADS),
        # One space uses the whole pool here: the per-space cap (fair share) would halve it. Its
        # cost per node (the claim reads and locks the space's row) is still paid.
        "RELAYFLOW_SPACE_MAX_RUNNING_NODES": "0",
        # One message held per worker thread, for all three systems (workers/runtime.py does the same).
        "dramatiq_queue_prefetch": str(THREADS),
        "BENCH_QUEUE": queue, "BENCH_STEPS": str(steps),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    })
    return env


class WorkerGroup:
    """One `dramatiq <module> --processes 2 --threads 8` process group, in its own session.

    `commands` instead runs each given command (one per worker process: the peers, which have
    no multi-process launcher of their own) under one `bash` in that session; the group ends
    when any of them exits. `ready_count` lines with `ready_marker` in the log mean it takes work
    (`ready_s` after the start).
    """

    def __init__(self, name: str, module: str, env: dict[str, str], log_dir: Path,
                 commands: list[list[str]] | None = None, ready_marker: bytes = b"is ready for action",
                 ready_count: int = PROCESSES, ready_timeout_s: float = 60.0) -> None:
        self.name = name
        self.started, self.ready_timeout_s, self.ready_s = time.monotonic(), ready_timeout_s, 0.0
        self.log_path = log_dir / f"{name}.log"
        self.ready_marker, self.ready_count = ready_marker, ready_count
        self._log = open(self.log_path, "ab")
        if commands:
            script = " ".join(f"{shlex.join(c)} &" for c in commands) + " wait -n; exit 1"
            argv = ["bash", "-c", script]
        else:
            argv = [sys.executable, "-m", "dramatiq", module, "--processes", str(PROCESSES), "--threads", str(THREADS),
                    "--worker-shutdown-timeout", "2000"]
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def __enter__(self) -> WorkerGroup:
        try:
            self.wait_ready(self.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def check(self) -> None:
        """Raise if the group's main process has exited."""
        if self.proc.poll() is not None:
            raise BenchError(f"worker group {self.name} exited with {self.proc.returncode}; see {self.log_path}")

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until every worker process has logged that it is ready."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check()
            if self.log_path.read_bytes().count(self.ready_marker) >= self.ready_count:
                self.ready_s = round(time.monotonic() - self.started, 2)
                return
            time.sleep(POLL_S)
        raise BenchError(f"worker group {self.name} not ready within {timeout_s:.0f}s; see {self.log_path}")

    def pids(self) -> set[int]:
        """Every live process of the group."""
        return {pid for pid, (_ppid, pgrp) in proc_table().items() if pgrp == self.proc.pid}

    def stop(self) -> None:
        """SIGTERM the group (its own process group only), SIGKILL it if it lingers."""
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # stragglers of the group (worker processes) after the main process exited
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not self._log.closed:
            self._log.close()


# -- workloads and summaries --------------------------------------------------------------------------
def linear(nodes: int, bounded: bool = False) -> dict[str, Any]:
    """n0 → n1 → … of `template` nodes, each reading its predecessor's output.

    `bounded` keeps every output at most 9 characters (the scale check, so the payload does not
    grow with the node's position); otherwise `{{ n<k-1>.text }}x` as in the issue.
    """
    ref = "{{{{ n{}.text[-8:] }}}}x" if bounded else "{{{{ n{}.text }}}}x"
    spec = [{"id": "n0", "type": "template", "config": {"template": "x"}}]
    spec += [{"id": f"n{k}", "type": "template", "config": {"template": ref.format(k - 1)}} for k in range(1, nodes)]
    return {"nodes": spec, "outputs": {"result": f"{{{{ n{nodes - 1}.text }}}}"}}


def fanout(width: int) -> dict[str, Any]:
    """root → f0 … f<width-1> (each reads root) → join (reads every f<i>): the fan-out workload."""
    spec = [{"id": "root", "type": "template", "config": {"template": "x"}}]
    spec += [{"id": f"f{i}", "type": "template", "config": {"template": f"{{{{ root.text }}}}{i}"}} for i in range(width)]
    spec.append({"id": "join", "type": "template",
                 "config": {"template": "".join(f"{{{{ f{i}.text }}}}" for i in range(width))}})
    return {"nodes": spec, "outputs": {"result": "{{ join.text }}"}}


def fanout_summary(walls_s: list[float], width: int) -> dict[str, Any]:
    """Wall time of fan-out runs (start → join done) and nodes per second (width + root + join)."""
    wall = summary_ms(walls_s)
    return {"width": width, "wall": wall, "nodes_per_s": round((width + 2) / (wall["median_ms"] / 1000), 1)}


def summary_ms(values_s: list[float]) -> dict[str, Any]:
    """Median, min, max (ms) and count of durations in seconds."""
    ordered = sorted(values_s)
    return {"median_ms": round(1000 * statistics.median(ordered), 2), "min_ms": round(1000 * ordered[0], 2),
            "max_ms": round(1000 * ordered[-1], 2), "n": len(ordered)}


def by_count(counts: dict[str, Any]) -> list[tuple[str, Any]]:
    """Items, largest first."""
    return sorted(counts.items(), key=lambda kv: -kv[1])
