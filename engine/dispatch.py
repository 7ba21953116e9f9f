"""Sending node messages. Redis is a delivery hint: Postgres already holds what must happen,
so a lost or duplicate message costs a reconciler sweep or a no-op claim, never a run."""
from __future__ import annotations

import logging
from typing import Any, Protocol

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Retries

from engine.settings import Settings

log = logging.getLogger("relayflow.dispatch")

ACTOR_NAME = "run_node"
# The same message, for a node of a pure type: the worker tries the unclaimed path first
# (engine/store/sql/unclaimed.py). A second actor rather than an argument: messages carry ids only.
PURE_ACTOR_NAME = "run_pure_node"


class Dispatcher(Protocol):
    """Something that delivers `run_node(run_id, node_id)` messages (`pure`: to `run_pure_node`)."""

    def send(self, run_id: str, node_id: str, delay_s: float = 0.0, pure: bool = False) -> None: ...


def make_broker(settings: Settings) -> RedisBroker:
    """The Redis broker every process uses (workers also attach middleware to it)."""
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set; run `relayflow up` for embedded servers.")
    # Only the middleware Relayflow uses: Retries (Dramatiq's own retries, for infrastructure
    # hiccups). Node timeouts are the executor's watchdog, and no actor uses callbacks,
    # pipelines, age limits or shutdown notices; each default middleware is called at every hook
    # of every message (~32 µs a message for the five others, a worker sends and handles one a node).
    broker = RedisBroker(url=settings.redis_url,  # type: ignore[no-untyped-call]
                         heartbeat_timeout=settings.redis_heartbeat_timeout_ms, middleware=[Retries()])
    broker.declare_queue(settings.queue_name)
    return broker


class DramatiqDispatcher:
    """Enqueues node messages on a Dramatiq broker; failures are logged, not raised."""

    def __init__(self, broker: dramatiq.Broker, queue_name: str) -> None:
        self.broker = broker
        self.queue_name = queue_name

    def send(self, run_id: str, node_id: str, delay_s: float = 0.0, pure: bool = False) -> None:
        """Enqueue one node message (delayed for retries); `pure`: a pure type's node, never delayed."""
        actor = PURE_ACTOR_NAME if pure and delay_s <= 0 else ACTOR_NAME
        message: dramatiq.Message[Any] = dramatiq.Message(queue_name=self.queue_name, actor_name=actor,
                                   args=(str(run_id), node_id), kwargs={}, options={})
        try:
            self.broker.enqueue(message, delay=int(delay_s * 1000) if delay_s > 0 else None)
        except Exception:  # Redis down: the reconciler re-sends from Postgres later.
            log.warning("could not enqueue %s/%s; the reconciler will re-send it", run_id, node_id, exc_info=True)
