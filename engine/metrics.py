"""Prometheus metrics: every series Relayflow exports, and one recording helper per transition.

Each process records into its own values; with `PROMETHEUS_MULTIPROC_DIR` set (by `relayflow
up`, or by the operator: docs/operations.md, "Metrics") they are files in that folder, and a scrape of any
web process (`GET /metrics`, `render`) adds up every process of the host that shares it: all
gunicorn workers and all Dramatiq worker processes (prometheus_client's multiprocess mode).
Without it, a scrape shows the scraping process's own values only.

Queue depth and the oldest queued node's age are not per-process values: the scraping process
reads them from Postgres at scrape time (`QueueCollector`). Labels never carry a run or node
id (unbounded cardinality): node type, model id, status, outcome, kind. Recording never raises.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

log = logging.getLogger("relayflow.metrics")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_NODE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
_LLM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)

RUNS_STARTED = Counter("relayflow_runs_started_total", "Runs clients started (child runs excluded), by run mode.",
                       ["mode"])
RUNS_ENDED = Counter("relayflow_runs_ended_total", "Runs clients started that ended, by final status.", ["status"])
NODE_ATTEMPTS = Counter("relayflow_node_attempts_total", "Node attempts executed, by node type and how they ended.",
                        ["type", "outcome"])
NODE_DURATION = Histogram("relayflow_node_attempt_duration_seconds",
                          "Wall time of a node attempt (execution, before its commit), by node type.", ["type"],
                          buckets=_NODE_BUCKETS)
NODE_RETRIES = Counter("relayflow_node_retries_total", "Failed node attempts scheduled for a retry, by node type.",
                       ["type"])
NODE_CRASHES = Counter("relayflow_node_crashes_total",
                       "Node leases that expired (worker died or stalled), by what the reconciler did.", ["action"])
REPAIRS = Counter("relayflow_reconciler_repairs_total", "Reconciler repairs, by kind.", ["kind"])
LLM_DURATION = Histogram("relayflow_llm_request_duration_seconds",
                         "LLM call latency (retries and fallbacks included), by the model that answered "
                         "(the node's model when none did).", ["model", "outcome"], buckets=_LLM_BUCKETS)
LLM_TOKENS = Counter("relayflow_llm_tokens_total",
                     "LLM tokens, by answering model and direction (input, output; cached_input is part of input).",
                     ["model", "direction"])
LLM_COST = Counter("relayflow_llm_cost_usd_total", "USD spent on LLM answers (declared prices x usage), by model.",
                   ["model"])
STREAMS_OPEN = Gauge("relayflow_event_streams_open", "Server-sent event streams open now (native and Coze routes).",
                     multiprocess_mode="livesum")
HTTP_REQUESTS = Counter("relayflow_http_requests_total", "HTTP requests answered, by route template, method and status.",
                        ["route", "method", "status"])


def _safe(record: Callable[..., None]) -> Callable[..., None]:
    """A metric must never fail the transition it observes."""
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            record(*args, **kwargs)
        except Exception:
            log.warning("could not record a metric (%s)", record.__name__, exc_info=True)
    guarded.__name__ = record.__name__
    guarded.__doc__ = record.__doc__
    return guarded


@_safe
def run_started(mode: str) -> None:
    """A client's run was inserted (not an idempotent repeat)."""
    RUNS_STARTED.labels(mode or "async").inc()


@_safe
def run_ended(status: str) -> None:
    """A client's run reached a final status."""
    RUNS_ENDED.labels(status).inc()


@_safe
def attempt_ended(node_type: str, outcome: object, seconds: float) -> None:
    """A node attempt ended; `outcome` is the executor's Outcome (its class names the label)."""
    NODE_ATTEMPTS.labels(node_type, type(outcome).__name__.lower()).inc()
    NODE_DURATION.labels(node_type).observe(max(0.0, seconds))


@_safe
def retry_scheduled(node_type: str) -> None:
    """A failed attempt will be retried."""
    NODE_RETRIES.labels(node_type).inc()


@_safe
def crashed(action: str) -> None:
    """A lease expired; `action`: requeued, failed (as crashed) or superseded."""
    NODE_CRASHES.labels(action).inc()


@_safe
def repaired(kind: str, count: int = 1) -> None:
    """The reconciler repaired something (message_resent, waiter_woken, skip_signalled, ...)."""
    if count:
        REPAIRS.labels(kind).inc(count)


@_safe
def llm_answered(model: str, seconds: float, usage: Mapping[str, int], cost: Decimal) -> None:
    """A model answered (its answer may still fail the node's checks: it was paid for)."""
    LLM_DURATION.labels(model, "answered").observe(max(0.0, seconds))
    for direction, key in (("input", "input_tokens"), ("output", "output_tokens"),
                           ("cached_input", "cached_input_tokens")):
        if usage.get(key):
            LLM_TOKENS.labels(model, direction).inc(int(usage[key]))
    if cost:
        LLM_COST.labels(model).inc(float(cost))


@_safe
def llm_failed(model: str, seconds: float) -> None:
    """No model of the chain answered."""
    LLM_DURATION.labels(model, "failed").observe(max(0.0, seconds))


@_safe
def http_answered(route: str, method: str, status: int) -> None:
    """The web app answered a request (route: the URL rule's template, never the path)."""
    HTTP_REQUESTS.labels(route, method, str(status)).inc()


@_safe
def stream_opened() -> None:
    """An event stream response was created (`stream_closed` runs when it is closed, however)."""
    STREAMS_OPEN.inc()


@_safe
def stream_closed() -> None:
    """An event stream response was closed."""
    STREAMS_OPEN.dec()


# -- exposition ---------------------------------------------------------------------------------
class QueueCollector:
    """Queue depth and the oldest queued node's age, read at scrape time by the scraping process."""

    def __init__(self, read: Callable[[], tuple[int, float]]) -> None:
        self.read = read

    def describe(self) -> list[Metric]:
        """Nothing to check against at registration (the query runs only when scraped)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Two gauges from one bounded query (none when the database does not answer)."""
        try:
            depth, oldest_s = self.read()
        except Exception:
            log.warning("queue gauges unavailable", exc_info=True)
            return
        yield GaugeMetricFamily("relayflow_queue_depth", "Nodes of live runs queued for a worker (capped at 100000).",
                                value=depth)
        yield GaugeMetricFamily("relayflow_queue_oldest_age_seconds",
                                "How long the oldest queued node of a live run has waited (0 when none).",
                                value=oldest_s)


class _ThisProcess:
    """This process's own series (the default registry), when no multiprocess folder is set."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def multiprocess_dir() -> str | None:
    """The folder every process of the host writes its values to, if set."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get("prometheus_multiproc_dir") or None


def scrape_registry(extra: Iterable[Any] = ()) -> CollectorRegistry:
    """A registry for one scrape: every process's values (or this one's), plus `extra` collectors."""
    registry = CollectorRegistry()
    if multiprocess_dir():
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    for collector in extra:
        registry.register(collector)
    return registry


def render(extra: Iterable[Any] = ()) -> tuple[bytes, str]:
    """(Prometheus text, its content type) for `GET /metrics`."""
    return generate_latest(scrape_registry(extra)), CONTENT_TYPE_LATEST


def process_exited(pid: int) -> None:
    """Drop a dead process's live gauges (`livesum`); its counters stay counted."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        try:
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
        except Exception:
            log.warning("could not mark process %d dead for metrics", pid, exc_info=True)


def serve(port: int, addr: str = "0.0.0.0") -> bool:
    """Export the host's metrics over HTTP on `port` (a worker host without a web process).

    Every worker process tries; the first to bind serves the folder's totals and the others are
    told the port is taken (False). Queue gauges are the web's (they need no worker)."""
    try:
        _start_http_server(port, addr=addr, registry=scrape_registry())
    except OSError:
        return False
    log.info("serving metrics on port %d", port)
    return True
