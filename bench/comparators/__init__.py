"""Comparators measured beside Relayflow in the same sitting (see docs/benchmarks.md).

Each is a `dramatiq workers` module configured by environment variables only:

- `REDIS_URL`: the broker (the same Redis database and broker options as Relayflow's workers);
- `BENCH_QUEUE`: the queue its actor consumes;
- `BENCH_STEPS`: messages per chain (default 10, like the 10-node workflow);
- `DATABASE_URL` (naive chain only).

A chain is started by sending step 0 with `(chain, 0, started_at)`; its last step records,
in one Redis pipeline, `INCR <queue>:done`, `RPUSH <queue>:ends <time>` and
`RPUSH <queue>:lat <time - started_at>` so the driver can read completion without adding load.
The naive chain's fan-out (`bench_naive_fan`, started with `(fan, "root", 0, width, started_at)`)
records its join the same way.
"""
from __future__ import annotations

import os
import time
from typing import Any

DEFAULT_HEARTBEAT_TIMEOUT_MS = 60_000  # engine.settings.Settings.redis_heartbeat_timeout_ms

# The naive chain's table (created by the driver, before the workers start).
TABLE_DDL = """
CREATE TABLE IF NOT EXISTS bench_steps (
    id bigserial PRIMARY KEY,
    chain integer NOT NULL,
    step integer NOT NULL,
    output jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)"""
INSERT_STEP_SQL = "INSERT INTO bench_steps (chain, step, output) VALUES (:chain, :step, CAST(:output AS jsonb))"
# The naive fan-out's join counter: one row per fan-out, `done` = leaves committed so far.
FANS_DDL = "CREATE TABLE IF NOT EXISTS bench_fans (fan integer PRIMARY KEY, done integer NOT NULL)"
INSERT_FAN_SQL = "INSERT INTO bench_fans (fan, done) VALUES (:fan, 0) ON CONFLICT (fan) DO UPDATE SET done = 0"
COUNT_LEAF_SQL = "UPDATE bench_fans SET done = done + 1 WHERE fan = :fan RETURNING done"


def steps() -> int:
    """Messages per chain."""
    return int(os.environ.get("BENCH_STEPS", "10"))


def queue_name(default: str) -> str:
    """The queue the comparator's actor consumes."""
    return os.environ.get("BENCH_QUEUE", default)


def make_broker() -> Any:
    """A RedisBroker built like `engine.dispatch.make_broker` (default middleware, same heartbeat)."""
    from dramatiq.brokers.redis import RedisBroker

    url = os.environ.get("REDIS_URL")
    if not url:
        raise RuntimeError("REDIS_URL is not set")
    timeout = int(os.environ.get("RELAYFLOW_REDIS_HEARTBEAT_TIMEOUT_MS", DEFAULT_HEARTBEAT_TIMEOUT_MS))
    return RedisBroker(url=url, heartbeat_timeout=timeout)


def install_broker(queue: str) -> Any:
    """The comparator's broker, set as Dramatiq's global, holding one message per thread like ours."""
    import dramatiq
    import dramatiq.worker

    if os.environ.get("dramatiq_queue_prefetch"):
        dramatiq.worker.QUEUE_PREFETCH = int(os.environ["dramatiq_queue_prefetch"])
    broker = make_broker()
    broker.declare_queue(queue)
    dramatiq.set_broker(broker)
    return broker


def record_done(client: Any, queue: str, started_at: float) -> None:
    """Mark one chain finished (one Redis round trip, once per chain)."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.incr(f"{queue}:done")
    pipe.rpush(f"{queue}:ends", repr(now))
    pipe.rpush(f"{queue}:lat", repr(now - started_at))
    pipe.execute()


def sqlalchemy_url(url: str) -> str:
    """Use psycopg 3 whatever the URL's spelling."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def create_table(url: str) -> None:
    """Create the naive chain's tables, its steps and its fan-outs' counters (idempotent)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text(TABLE_DDL))
            conn.execute(text(FANS_DDL))
    finally:
        engine.dispose()
