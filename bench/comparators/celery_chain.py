"""Peer C, Celery: a chain of 10 tasks with a Redis broker and a Redis result backend.

Each task takes its predecessor's result (`{"text": …}`), returns it with one more `x`
(the template workflow's output), and Celery stores that result in Redis before the chain's next
task is sent. The last task records the chain as done like the Dramatiq comparators
(`bench.comparators.record_done`). Nothing is written to Postgres: Celery keeps no durable
state of the chain (a lost worker loses the chain's remaining tasks unless acks are late, as here).

Two `celery worker --pool threads --concurrency 8 --prefetch-multiplier 1` processes, Relayflow's
shape (2 processes x 8 threads, one message held per thread); `BENCH_CELERY_POOL=prefork` runs
one prefork worker with 2 children instead (see `worker_commands`). Configured
by the environment of `bench/comparators/__init__.py` (`REDIS_URL`, `BENCH_QUEUE`, `BENCH_STEPS`).

Fan-out (`fanout_signature`): root -> `group` of N leaves -> join, a Celery `chord`; the join
records the fan-out as done.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

from celery import Celery, chain, chord, group
from celery.signals import worker_ready

from bench.comparators import queue_name, record_done, steps

READY_MARKER = b"bench celery worker ready"
QUEUE = queue_name("bench_celery")
STEPS = steps()


def make_app(url: str | None = None) -> Celery:
    """The app: Redis broker and Redis result backend on the same database (`REDIS_URL` by default)."""
    url = url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    app = Celery("bench_celery", broker=url, backend=url)
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json", result_serializer="json", accept_content=["json"],
        # at-least-once like Dramatiq: a task's message is acked after it ran, not on receipt
        task_acks_late=True,
        # one message held per worker thread, as Relayflow's workers hold (dramatiq_queue_prefetch)
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        result_expires=3600,
    )
    return app


app = make_app()


@app.task(name="bench_celery_step", ignore_result=False)
def celery_step(prev: dict[str, Any], chain_no: int, k: int, started_at: float) -> dict[str, Any]:
    """One step: the predecessor's text plus an `x`; the last step records the chain."""
    out = {"text": prev["text"] + "x"}
    if k + 1 >= STEPS:
        record_done(app.backend.client, QUEUE, started_at)
    return out


@app.task(name="bench_celery_root")
def celery_root(started_at: float) -> dict[str, Any]:
    """The fan-out's root."""
    return {"text": "x", "started_at": started_at}


@app.task(name="bench_celery_leaf")
def celery_leaf(root: dict[str, Any], i: int) -> dict[str, Any]:
    """One of the fan-out's parallel nodes: reads the root's output."""
    return {"text": f"{root['text']}{i}"}


@app.task(name="bench_celery_join")
def celery_join(leaves: list[dict[str, Any]], started_at: float) -> dict[str, Any]:
    """The fan-out's join: reads every leaf's output, records the fan-out as done."""
    out = {"text": "".join(leaf["text"] for leaf in leaves)}
    record_done(app.backend.client, QUEUE, started_at)
    return {"chars": len(out["text"])}


def chain_signature(sender: Celery, queue: str, chain_no: int, nodes: int, started_at: float) -> Any:
    """The chain of `nodes` tasks, built from `sender` (the driver's app) by task name."""
    first = sender.signature("bench_celery_step", args=({"text": ""}, chain_no, 0, started_at), queue=queue)
    rest = [sender.signature("bench_celery_step", args=(chain_no, k, started_at), queue=queue) for k in range(1, nodes)]
    return chain(first, *rest)


def fanout_signature(sender: Celery, queue: str, width: int, started_at: float) -> Any:
    """root -> `width` leaves in parallel -> join, as a chain of the root and a chord."""
    root = sender.signature("bench_celery_root", args=(started_at,), queue=queue)
    leaves = group(sender.signature("bench_celery_leaf", args=(i,), queue=queue) for i in range(width))
    return chain(root, chord(leaves, sender.signature("bench_celery_join", args=(started_at,), queue=queue)))


def worker_commands(queue: str, processes: int, threads: int, pool: str = "threads") -> list[list[str]]:
    """`threads`: one `celery worker --pool threads --concurrency <threads>` per process, Relayflow's
    shape. `prefork`: one `celery worker --pool prefork --concurrency <processes>` (a parent that
    talks to Redis and <processes> single-threaded children). Gossip, mingle and heartbeats are
    off in both: cluster chatter, not the task path."""
    def command(name: str, pool_args: list[str]) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "bench.comparators.celery_chain", "worker", *pool_args,
                "--prefetch-multiplier", "1", "-Q", queue, "-n", f"{name}-{os.getpid()}@%h", "--loglevel", "WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]

    if pool == "prefork":
        return [command("bench", ["--pool", "prefork", "--concurrency", str(processes)])]
    return [command(f"bench{p}", ["--pool", "threads", "--concurrency", str(threads)]) for p in range(processes)]


@worker_ready.connect
def _announce(**_: Any) -> None:
    """The driver waits for this line from each worker process (Celery logs `ready.` at INFO only)."""
    os.write(2, READY_MARKER + f" {time.time():.3f}\n".encode())
