"""Traces (OpenTelemetry) of runs, node attempts and model calls, and the transition log lines.

Off unless the operator configures an exporter with the standard variables
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_TRACES_EXPORTER=otlp|console`;
`OTEL_SDK_DISABLED=true` wins). Off, no SDK provider exists and each hook checks `ENABLED` before
it builds anything but its log line. On, each process builds its own provider and batch processor
after the fork (`configure`: workers/runtime.py, api/gunicorn_conf.py) and flushes at stop.

One trace per run tree without propagating any context through messages: the trace id is the
top run's UUID (128 bits) and a run's span id is derived from its id, so every process computes
the same parent for a node attempt's span. A run's span (`run <workflow_id>`) is exported once,
by the process whose statement ended the run, with the run's created/finished times; its node
spans, exported earlier, name it as their parent. A child run's span is a child of its parent
run's span. The top run is found once per run and process (one query, only when tracing).

The executor calls one hook per transition point; each logs its line (engine/oplog.py) and, when
tracing, records the span. A hook never fails the node: a tracing error is logged and dropped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine import oplog
from engine.models.registry import mask_keys

if TYPE_CHECKING:
    from engine.compiler import CompiledNode
    from engine.settings import Settings
    from engine.store import Claim, Ended, Store

ENABLED = False  # set by `configure` in a process that exports traces; every hook checks it first
log = logging.getLogger("relayflow.telemetry")
_tracer: Any = None
_provider: Any = None
_capture_content = False
_local = threading.local()  # this thread's attempt span, and ids forced on the next span
_RUNS_KEPT = 4096
_runs: dict[uuid.UUID, tuple[str | None, uuid.UUID | None]] = {}  # run -> (space_id, top run id)
_runs_lock = threading.Lock()
PROVIDERS = {"openai": "openai", "claude": "anthropic", "ark": "volcengine", "deepseek": "deepseek",
             "gemini": "gcp.gemini", "qwen": "dashscope", "ollama": "ollama"}


# -- configuration ------------------------------------------------------------------------------
def exporter_from_env(env: Mapping[str, str]) -> str | None:
    """Which exporter the standard variables ask for: `otlp`, `console` or None (pure)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if names:
        return next((n for n in names if n in ("otlp", "console")), None)
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return "otlp"
    return None


def configure(service_name: str, settings: Settings, env: Mapping[str, str] | None = None) -> bool:
    """Build this process's tracer provider if an exporter is configured; whether tracing is on."""
    global ENABLED, _tracer, _provider, _capture_content
    kind = exporter_from_env(os.environ if env is None else env)
    if kind is None or ENABLED:
        return ENABLED
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if kind == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, timeout: the standard OTEL_EXPORTER_OTLP_* variables
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    _provider = TracerProvider(resource=Resource.create(attributes), id_generator=_forced_ids())
    _provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(_provider)
    _tracer = _provider.get_tracer("relayflow")
    _capture_content = settings.otel_capture_content
    ENABLED = True
    log.info("exporting traces", extra={"event": "telemetry.configured", "exporter": kind})
    return True


def shutdown() -> None:
    """Export the spans still buffered and stop the exporter (process stop)."""
    global ENABLED
    if _provider is not None and ENABLED:
        ENABLED = False
        _provider.shutdown()


def _forced_ids() -> Any:
    """Random ids, except the ids a run's span must have (set on the thread just before it starts)."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class ForcedIds(RandomIdGenerator):
        def generate_span_id(self) -> int:
            return int(getattr(_local, "span_id", None) or super().generate_span_id())

        def generate_trace_id(self) -> int:
            return int(getattr(_local, "trace_id", None) or super().generate_trace_id())

    return ForcedIds()


def trace_id_of(top_run_id: uuid.UUID) -> int:
    """The trace id of a run tree: its top run's UUID as a 128-bit number."""
    return top_run_id.int or 1


def span_id_of(run_id: uuid.UUID) -> int:
    """A run's span id: 64 bits of a hash of its id (deterministic, so any process can parent to it)."""
    return int.from_bytes(hashlib.blake2b(run_id.bytes, digest_size=8).digest(), "big") or 1


def _run_context(top: uuid.UUID, run_id: uuid.UUID) -> Any:
    """A context whose current span is the run's span (not started here: it is exported at the end)."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    parent = SpanContext(trace_id_of(top), span_id_of(run_id), is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


def _remember(run_id: uuid.UUID, space_id: str | None, top: uuid.UUID | None) -> None:
    with _runs_lock:
        if len(_runs) >= _RUNS_KEPT:
            _runs.pop(next(iter(_runs)))
        _runs[run_id] = (space_id, top)


def _top_run(store: Store, run_id: uuid.UUID, space_id: str | None) -> uuid.UUID:
    """The run's top run id: remembered, or read once (tracing only)."""
    known = _runs.get(run_id)
    if known is not None and known[1] is not None:
        return known[1]
    row = store.traces.run_trace(run_id)
    top = row["root_id"] if row is not None else run_id
    _remember(run_id, space_id, top)
    return top


def _ids(run_id: uuid.UUID) -> dict[str, Any]:
    """The `trace_id` of a log line, when tracing and the run's top run is known."""
    if not ENABLED:
        return {}
    known = _runs.get(run_id)
    return {"trace_id": format(trace_id_of(known[1]), "032x")} if known and known[1] else {}


# -- node attempts ------------------------------------------------------------------------------
def node_started(store: Store, run_id: uuid.UUID, node: CompiledNode, claim: Claim, *, span: bool = True,
                 log_lines: bool = True) -> None:
    """A node was claimed: log `run.started` (its first node) and `node.started`; open its span.

    An unclaimed node (engine/unclaimed.py) opens its span when it starts and logs once its commit
    recorded the start: two calls, one with each part."""
    if span and ENABLED:
        try:
            _open_attempt(store, run_id, node, claim)
        except Exception:
            log.warning("could not start the span of %s/%s", run_id, node.id, exc_info=True)
    elif span:
        _remember(run_id, claim.space_id, None)
    if not log_lines:
        return
    if claim.run_started:
        oplog.run_started(run_id, claim.space_id, node.id, **_ids(run_id))
    oplog.node_started(run_id, node.id, claim.attempt, claim.space_id, node.type_name,
                       claim.resume is not None, **_ids(run_id))


def _open_attempt(store: Store, run_id: uuid.UUID, node: CompiledNode, claim: Claim) -> None:
    top = _top_run(store, run_id, claim.space_id)
    attributes = {"relayflow.run_id": str(run_id), "relayflow.node_id": node.id,
                  "relayflow.node_type": node.type_name, "relayflow.attempt": claim.attempt,
                  "relayflow.space_id": claim.space_id or ""}
    if claim.resume is not None:
        attributes["relayflow.resumed"] = True
    _local.attempt = _tracer.start_span(f"node {node.id}", context=_run_context(top, run_id), attributes=attributes)


def node_settled(run_id: uuid.UUID, node: CompiledNode, claim: Claim, outcome: str, **details: Any) -> None:
    """An attempt ended without failing (`succeeded`, `interrupted`, `delegated`; `superseded`: its
    commit lost to a newer attempt or the run's end): log it and mark its span."""
    event = "node.superseded" if outcome == "superseded" else f"node.{outcome}"
    oplog.node_settled(event, run_id, node.id, claim.attempt, claim.space_id, **details, **_ids(run_id))
    if outcome == "interrupted":  # the run waits for a person
        oplog.run_ended(run_id, "interrupted", claim.space_id, None, **_ids(run_id))
    span = getattr(_local, "attempt", None) if ENABLED else None
    if span is not None:
        span.set_attribute("relayflow.outcome", outcome)
        node_finished()  # the attempt ended with its commit (what follows, the run's end, is not its time)


def node_failed(run_id: uuid.UUID, node_id: str, claim: Claim, error: dict[str, Any], outcome: str,
                **details: Any) -> None:
    """An attempt failed (`outcome`: retry_scheduled, run_failed, continued, superseded): log it and
    mark its span as an error."""
    oplog.node_failure(run_id, node_id, claim.attempt, claim.space_id, error, outcome, **details,
                       **_ids(run_id))
    span = getattr(_local, "attempt", None) if ENABLED else None
    if span is not None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attributes({"relayflow.outcome": outcome, "relayflow.error.code": error.get("code") or 0,
                             "error.type": str(error.get("kind") or "error")})
        span.set_status(Status(StatusCode.ERROR, str(error.get("kind") or "error")))
        node_finished()


def node_finished() -> None:
    """End this thread's attempt span, if one is still open (at its outcome, or when the message is done)."""
    span = getattr(_local, "attempt", None)
    if span is None:
        return
    _local.attempt = None
    try:
        span.end()
    except Exception:
        log.warning("could not end a node span", exc_info=True)


# -- runs ---------------------------------------------------------------------------------------
def run_ended(store: Store, ended: Ended, space_id: str | None = None) -> None:
    """A statement ended a run (`ended.changed`): log `run.<status>` and export the run's span."""
    if not ended.changed or ended.run_id is None or ended.status is None:
        return
    run_id = ended.run_id
    known = _runs.get(run_id)
    row = None
    if ENABLED:
        try:
            row = store.traces.run_trace(run_id)
            if row is not None:
                _remember(run_id, row["space_id"], row["root_id"])
                _export_run(row)
        except Exception:
            log.warning("could not export the span of run %s", run_id, exc_info=True)
    space = space_id or (row["space_id"] if row else None) or (known[0] if known else None)
    oplog.run_ended(run_id, ended.status, space, ended.error, **_ids(run_id))


def _export_run(row: dict[str, Any]) -> None:
    from opentelemetry.trace import Status, StatusCode

    run_id, top = row["id"], row["root_id"]
    context = _run_context(top, row["parent_run_id"]) if row["parent_run_id"] else None
    attributes: dict[str, Any] = {
        "relayflow.run_id": str(run_id), "relayflow.workflow_id": str(row["workflow_id"]),
        "relayflow.workflow_version": row["version"] or 0, "relayflow.space_id": row["space_id"] or "",
        "relayflow.status": row["status"], "relayflow.depth": row["depth"] or 0}
    if row["parent_run_id"]:
        attributes["relayflow.parent_run_id"] = str(row["parent_run_id"])
        attributes["relayflow.parent_node_id"] = row["parent_node_id"] or ""
    error = row["error"] or {}
    if error.get("code") is not None:
        attributes["relayflow.error.code"] = error["code"]
    _local.trace_id, _local.span_id = trace_id_of(top), span_id_of(run_id)
    try:
        span = _tracer.start_span(f"run {row['workflow_id']}", context=context, attributes=attributes,
                                  start_time=_ns(row["created_at"]))
    finally:
        _local.trace_id = _local.span_id = None
    if row["status"] == "failed":
        span.set_status(Status(StatusCode.ERROR, str(error.get("code") or "failed")))
    span.end(end_time=_ns(row["finished_at"]) if row["finished_at"] else None)


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


# -- model calls (GenAI semantic conventions) -------------------------------------------------------
class Chat:
    """One model call's span; a no-op when tracing is off."""

    def __init__(self, span: Any = None) -> None:
        self.span = span

    def answered(self, response_model: str, usage: Mapping[str, int], text: str) -> None:
        """The call answered: response model and token usage (and the text, if capture is on)."""
        if self.span is None:
            return
        self.span.set_attributes({"gen_ai.response.model": response_model,
                                  "gen_ai.usage.input_tokens": int(usage.get("input_tokens", 0)),
                                  "gen_ai.usage.output_tokens": int(usage.get("output_tokens", 0))})
        if _capture_content:
            self.span.set_attribute("gen_ai.output.messages", mask_keys(json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": text}]}], ensure_ascii=False)))


@contextmanager
def chat(model: str, protocol: str | None, params: Mapping[str, Any],
         messages: list[dict[str, Any]]) -> Iterator[Chat]:
    """A `chat {model}` span, a child of this thread's attempt span, around one model call."""
    if not ENABLED:
        yield Chat()
        return
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    provider = PROVIDERS.get(protocol or "", protocol or "unknown")
    attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider,
                                  "gen_ai.system": provider, "gen_ai.request.model": model}
    for key, name in (("temperature", "gen_ai.request.temperature"), ("max_tokens", "gen_ai.request.max_tokens"),
                      ("top_p", "gen_ai.request.top_p")):
        if isinstance(params.get(key), int | float) and not isinstance(params.get(key), bool):
            attributes[name] = params[key]
    if _capture_content:
        attributes["gen_ai.input.messages"] = mask_keys(json.dumps(
            [{"role": m.get("role"), "parts": [{"type": "text", "content": m.get("content")}]} for m in messages],
            ensure_ascii=False, default=str))
    attempt = getattr(_local, "attempt", None)
    context = trace.set_span_in_context(attempt) if attempt is not None else None
    span = _tracer.start_span(f"chat {model}", context=context, kind=SpanKind.CLIENT, attributes=attributes)
    try:
        yield Chat(span)
    except Exception as exc:
        failed = (getattr(exc, "details", None) or {}).get("failed_calls") or []
        error_type = str(failed[-1].get("error")) if failed else type(exc).__name__
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, error_type))
        raise
    finally:
        span.end()
