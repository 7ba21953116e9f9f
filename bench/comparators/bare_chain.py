"""Comparator A, the queue ceiling: a Dramatiq chain of no-op messages.

Step k of a chain only enqueues step k+1 (no database). Run with
`dramatiq workers bench.comparators.bare_chain --processes 2 --threads 8` and the
environment described in `bench/comparators/__init__.py`.
"""
from __future__ import annotations

import dramatiq

from bench.comparators import install_broker, queue_name, record_done, steps

ACTOR_NAME = "bench_bare_step"
QUEUE = queue_name("bench_bare")
STEPS = steps()

broker = install_broker(QUEUE)


@dramatiq.actor(actor_name=ACTOR_NAME, queue_name=QUEUE, max_retries=0)
def bare_step(chain: int, k: int, started_at: float) -> None:
    """One no-op step: send the next one, or record the chain as done."""
    if k + 1 < STEPS:
        bare_step.send(chain, k + 1, started_at)
    else:
        record_done(broker.client, QUEUE, started_at)
