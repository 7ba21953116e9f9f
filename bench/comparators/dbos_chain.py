"""Peer D, DBOS: a durable workflow of 10 steps, checkpointed in Postgres (DBOS Transact).

`bench_dbos_chain(nodes)` runs `nodes` `@DBOS.step`s one after the other, each returning its
predecessor's text plus an `x`; DBOS checkpoints every step's output and the workflow's status
in its system database (its own database, `<bench db>_dbos`, on the same Postgres server).

DBOS runs workflows inside the process that launched it. To use Relayflow's shape (2 processes
x 8 threads) the driver enqueues the workflows on a DBOS queue (`DBOSClient.enqueue`) and two
worker processes (`python -m bench.comparators.dbos_chain`), each with its own executor id,
dequeue at most 8 at a time each (`worker_concurrency=8`). A queue is polled, not woken:
`BENCH_DBOS_POLL_S` (default 0.1 s, Relayflow's idle poll cap `queue_poll_max_ms`) sets its
interval. Completion is read from `dbos.workflow_status` (status and `updated_at`).

Fan-out (`bench_dbos_fanout(width)`): a root step, `width` child workflows enqueued on the same
queue (so both processes run them; DBOS's fan-out pattern), their results awaited, a join step.

Environment: `DBOS_SYSTEM_DATABASE_URL`, `BENCH_QUEUE`, `BENCH_DBOS_POLL_S`, `BENCH_DBOS_CONCURRENCY`.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from dbos import DBOS, DBOSConfig

APP_NAME = "relayflow_bench_dbos"
READY_MARKER = b"bench dbos worker ready"
CHAIN_WORKFLOW, FANOUT_WORKFLOW = "bench_dbos_chain", "bench_dbos_fanout"


@DBOS.step(name="bench_dbos_step")
def dbos_step(prev: dict[str, Any], k: int) -> dict[str, Any]:
    """One node: the predecessor's text plus an `x`."""
    return {"text": prev["text"] + "x"}


@DBOS.workflow(name=CHAIN_WORKFLOW)
def dbos_chain(nodes: int) -> dict[str, Any]:
    """`nodes` steps in a row; each step's output is checkpointed before the next runs."""
    out: dict[str, Any] = {"text": ""}
    for k in range(nodes):
        out = dbos_step(out, k)
    return out


@DBOS.step(name="bench_dbos_root")
def dbos_root() -> dict[str, Any]:
    return {"text": "x"}


@DBOS.workflow(name="bench_dbos_leaf")
def dbos_leaf(root: dict[str, Any], i: int) -> dict[str, Any]:
    """A parallel node: a child workflow whose result DBOS checkpoints."""
    return {"text": f"{root['text']}{i}"}


@DBOS.step(name="bench_dbos_join")
def dbos_join(leaves: list[dict[str, Any]]) -> dict[str, Any]:
    return {"chars": len("".join(leaf["text"] for leaf in leaves))}


@DBOS.workflow(name=FANOUT_WORKFLOW)
def dbos_fanout(width: int) -> dict[str, Any]:
    """root -> `width` child workflows on the queue (both processes) -> join."""
    root = dbos_root()
    queue = os.environ["BENCH_QUEUE"]
    handles = [DBOS.enqueue_workflow(queue, dbos_leaf, root, i) for i in range(width)]
    # awaited at the queue's poll interval (DBOS's default is 1 s)
    return dbos_join([h.get_result(polling_interval_sec=poll_s()) for h in handles])


def poll_s() -> float:
    """How often a worker polls the queue, and a fan-out polls its children's results."""
    return float(os.environ.get("BENCH_DBOS_POLL_S", "0.1"))


def config(url: str, executor_id: str) -> DBOSConfig:
    """Each worker process needs its own executor id for `worker_concurrency` to hold per process."""
    return {"name": APP_NAME, "system_database_url": url, "executor_id": executor_id,
            "application_version": "bench", "log_level": "WARNING",
            # a pool like Relayflow's per process (10 + overflow): 8 workflow threads and the queue thread
            "sys_db_pool_size": 20}


def main() -> int:
    """A worker process: launch DBOS, listen on the queue, run until SIGTERM."""
    url = os.environ["DBOS_SYSTEM_DATABASE_URL"]
    queue = os.environ["BENCH_QUEUE"]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    DBOS(config=config(url, f"bench-{os.getpid()}"))
    DBOS.launch()
    DBOS.register_queue(queue, worker_concurrency=int(os.environ.get("BENCH_DBOS_CONCURRENCY", "8")),
                        polling_interval_sec=poll_s(),
                        on_conflict="always_update")
    sys.stderr.write(READY_MARKER.decode() + "\n")
    sys.stderr.flush()
    stop.wait()
    DBOS.destroy(workflow_completion_timeout_sec=2)
    return 0


def worker_commands(processes: int) -> list[list[str]]:
    return [[sys.executable, "-m", "bench.comparators.dbos_chain"] for _ in range(processes)]


if __name__ == "__main__":
    sys.exit(main())
