"""Monitors: the Redis commands sent per node (in process, or MONITOR for every client) and what
the bench database's backends wait for (pg_stat_activity sampling)."""
from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import redis as redis_lib

from bench.harness import REDIS_DB, BenchError, by_count


# -- Redis --------------------------------------------------------------------------------------------------
def _command_name(parts: list[Any]) -> str:
    name = str(parts[0]).upper()
    if name == "EVALSHA" and len(parts) > 4:  # dramatiq's dispatch script: its command is the 5th argument
        return f"EVALSHA dispatch:{parts[4]}"
    return name


def count_redis_calls(client: Any) -> dict[str, int]:
    """Count the commands this process sends through a redis-py client (the dict fills as it goes)."""
    calls: dict[str, int] = {}
    real_execute = client.execute_command

    def counting_execute(*args: Any, **kwargs: Any) -> Any:
        name = _command_name(list(args))
        calls[name] = calls.get(name, 0) + 1
        return real_execute(*args, **kwargs)

    client.execute_command = counting_execute
    return calls


class RedisMonitor:
    """Counts the commands every client sends to the bench's Redis database (MONITOR, one phase only)."""

    STOP = "relayflow-bench-monitor-stop"

    def __init__(self, redis_url: str) -> None:
        self.url = redis_url
        self.counts: dict[str, int] = {}
        self.lua = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self._client = redis_lib.Redis.from_url(redis_url, socket_timeout=30)

    def _run(self) -> None:
        with self._client.monitor() as monitor:
            self._ready.set()
            for cmd in monitor.listen():
                if cmd is None or cmd["db"] != REDIS_DB:
                    continue
                parts = cmd["command"].split(" ")
                if cmd["client_type"] == "lua":
                    self.lua += 1
                elif parts[:2] == ["ECHO", self.STOP]:
                    return
                else:
                    name = _command_name(parts)
                    self.counts[name] = self.counts.get(name, 0) + 1

    def __enter__(self) -> RedisMonitor:
        self._thread.start()
        if not self._ready.wait(10):
            raise BenchError("Redis MONITOR did not start")
        time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        client = redis_lib.Redis.from_url(self.url)
        client.echo(self.STOP)
        client.close()
        self._thread.join(timeout=15)
        self._client.close()

    def report(self, units: int) -> dict[str, Any]:
        total = sum(self.counts.values())
        return {"commands_per_node": round(total / units, 2),
                "by_command_per_node": {k: round(v / units, 2) for k, v in by_count(self.counts)},
                "lua_internal_calls_per_node": round(self.lua / units, 2), "units": units}


# -- PostgreSQL wait events ------------------------------------------------------------------------------------
class WaitSampler:
    """Samples what the bench database's client backends are doing (pg_stat_activity) every 5 ms."""

    def __init__(self, bench_url: str) -> None:
        self.bench_url = bench_url
        self.counts: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-waits", daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.bench_url, autocommit=True) as conn:
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE datname = current_database() AND backend_type = 'client backend' "
                    "AND pid <> pg_backend_pid()").fetchall()
                for state, kind, event in rows:
                    key = f"{state}: {kind}/{event}" if kind else f"{state}: on CPU"
                    self.counts[key] = self.counts.get(key, 0) + 1
                self.samples += 1
                time.sleep(0.005)

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def report(self) -> dict[str, Any]:
        n = max(1, self.samples)
        return {"samples": self.samples,
                "backends_per_sample": {k: round(v / n, 2) for k, v in by_count(self.counts) if v / n >= 0.01}}
