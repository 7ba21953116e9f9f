"""Comparator B, the naive limit of this design: one Postgres transaction per step.

Step k of a chain commits one transaction (`with engine.begin(): INSERT INTO bench_steps …`,
SQLAlchemy + psycopg 3, synchronous_commit as the server has it) and then enqueues step k+1.
That is the least a "checkpoint every step in Postgres, one message per step" design can do;
it records nothing else (no claim, no fencing, no successor rows, no events).

Its fan-out (`bench_naive_fan`, root -> `width` parallel leaves -> join) is built the same way,
one transaction per step: the root commits its row and its fan-out's counter row
(`bench_fans`, done = 0) and sends the `width` leaves; each leaf commits its row and
`UPDATE bench_fans SET done = done + 1 … RETURNING done` in one transaction, and the leaf that
makes `done == width` sends the join; the join commits its row and records the fan-out as done.

Run with `dramatiq workers bench.comparators.naive_chain --processes 2 --threads 8`
and the environment described in `bench/comparators/__init__.py` plus `DATABASE_URL`.
`bench.comparators.create_table(url)` makes its table (the driver calls it before starting the workers).
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any

import dramatiq
from sqlalchemy import Engine, create_engine, text

from bench.comparators import (
    COUNT_LEAF_SQL,
    INSERT_FAN_SQL,
    INSERT_STEP_SQL,
    install_broker,
    queue_name,
    record_done,
    sqlalchemy_url,
    steps,
)

ACTOR_NAME = "bench_naive_step"
FAN_ACTOR_NAME = "bench_naive_fan"
INSERT_STEP = text(INSERT_STEP_SQL)
INSERT_FAN = text(INSERT_FAN_SQL)
COUNT_LEAF = text(COUNT_LEAF_SQL)
QUEUE = queue_name("bench_naive")
STEPS = steps()

_engine: Engine | None = None
_lock = threading.Lock()


def get_engine() -> Engine:
    """One pool per worker process, created after fork; sized like Relayflow's (10 + 10)."""
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                pre_ping = os.environ.get("BENCH_NAIVE_PRE_PING", "0") == "1"
                _engine = create_engine(sqlalchemy_url(os.environ["DATABASE_URL"]), pool_size=10,
                                        max_overflow=10, pool_pre_ping=pre_ping)
    return _engine


broker = install_broker(QUEUE)


@dramatiq.actor(actor_name=ACTOR_NAME, queue_name=QUEUE, max_retries=0)
def naive_step(chain: int, k: int, started_at: float) -> None:
    """Commit this step's row, then send the next step (or record the chain as done)."""
    output: dict[str, Any] = {"text": "x" * (k + 1)}
    with get_engine().begin() as conn:
        conn.execute(INSERT_STEP, {"chain": chain, "step": k, "output": json.dumps(output)})
    if k + 1 < STEPS:
        naive_step.send(chain, k + 1, started_at)
    else:
        record_done(broker.client, QUEUE, started_at)


@dramatiq.actor(actor_name=FAN_ACTOR_NAME, queue_name=QUEUE, max_retries=0)
def naive_fan(fan: int, role: str, index: int, width: int, started_at: float) -> None:
    """One step of fan-out `fan` (root, leaf `index`, or join), one transaction each; rows
    `(fan, 0)` for the root, `(fan, 1 + index)` for a leaf, `(fan, width + 1)` for the join."""
    if role == "root":
        with get_engine().begin() as conn:
            conn.execute(INSERT_STEP, {"chain": fan, "step": 0, "output": json.dumps({"text": "x"})})
            conn.execute(INSERT_FAN, {"fan": fan})
        for i in range(width):
            naive_fan.send(fan, "leaf", i, width, started_at)
    elif role == "leaf":
        with get_engine().begin() as conn:
            conn.execute(INSERT_STEP, {"chain": fan, "step": 1 + index, "output": json.dumps({"text": f"x{index}"})})
            done = conn.execute(COUNT_LEAF, {"fan": fan}).scalar_one()
        if done == width:
            naive_fan.send(fan, "join", width, width, started_at)
    else:
        output = {"text": "".join(f"x{i}" for i in range(width))}
        with get_engine().begin() as conn:
            conn.execute(INSERT_STEP, {"chain": fan, "step": width + 1, "output": json.dumps(output)})
        record_done(broker.client, QUEUE, started_at)
