"""Dramatiq entry point: `dramatiq workers`. Sets the broker, then declares the actors
(`run_node`, and `run_pure_node` for nodes of pure types).

The actor is thin: a message carries ids only and the executor does the work. Node retries
are the engine's (durable, in Postgres); Dramatiq's own retries cover infrastructure hiccups
such as a database restart.
"""
from __future__ import annotations

import dramatiq

from engine import logfmt
from engine.dispatch import ACTOR_NAME, PURE_ACTOR_NAME, make_broker
from engine.errors import ConfigurationError
from engine.settings import get_settings
from workers.runtime import WorkerRuntime

try:
    settings = get_settings()
except ConfigurationError as exc:
    # The message alone (exit code 1), not a traceback: each worker process says it, then
    # dramatiq's main process sees its workers exit and stops.
    raise SystemExit(f"relayflow worker: {exc.message}") from None
# The worker process's entry point: its logging is configured here, once (dramatiq's own
# `basicConfig`, when not skipped, is replaced, so each record is one line).
logfmt.configure(settings.log_level, settings.log_format)
broker = make_broker(settings)
runtime = WorkerRuntime(settings)
broker.add_middleware(runtime)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name=ACTOR_NAME, queue_name=settings.queue_name, max_retries=20,
                min_backoff=500, max_backoff=30_000)
def run_node(run_id: str, node_id: str) -> None:
    """Run one node of one run."""
    runtime.executor().run_node(run_id, node_id)


@dramatiq.actor(actor_name=PURE_ACTOR_NAME, queue_name=settings.queue_name, max_retries=20,
                min_backoff=500, max_backoff=30_000)
def run_pure_node(run_id: str, node_id: str) -> None:
    """Run one node of a pure type, unclaimed if it is still untouched."""
    runtime.executor().run_node(run_id, node_id, pure=True)
