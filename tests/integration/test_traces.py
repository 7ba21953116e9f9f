"""Traces of a real worker process, received by a loopback OTLP/HTTP collector: one trace per run,
a span per node attempt under the run's span, GenAI spans for model calls; nothing when no
exporter is configured."""
from __future__ import annotations

import gzip
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.conftest import free_port
from tests.integration.llm_fixtures import FAKE_KEY
from tests.integration.test_llm_node import refresh
from tests.integration.test_subworkflow import caller, leaf
from tests.log_lines import log_events

pytestmark = pytest.mark.integration
OTLP_DEFAULT_PORT = 4318  # where an SDK configured by default would send its spans


class Collector:
    """A tiny OTLP/HTTP trace receiver on loopback: every span it was sent, decoded."""

    def __init__(self, port: int) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector.receive(self.path, body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def receive(self, path: str, body: bytes) -> None:
        self.requests += 1
        assert path == "/v1/traces", path
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            service = {a.key: _value(a.value) for a in resource.resource.attributes}.get("service.name")
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.spans.append({
                        "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent_id": span.parent_span_id.hex(), "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano, "service": service, "status": span.status.code,
                        "attributes": {a.key: _value(a.value) for a in span.attributes}})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def collector() -> Iterator[Collector]:
    """A collector on a free loopback port."""
    running = Collector(free_port())
    yield running
    running.stop()


def _flaky_then_ask() -> dict[str, Any]:
    """A model node that fails its first attempt (two 500s: the Router's own retry spent), then one that answers."""
    ask = {"model": "answerer", "system_prompt": "Be brief.", "prompt": "Tell me about {{ inputs.topic }}",
           "parameters": {"temperature": 0.2, "max_tokens": 64}}
    flaky = {**ask, "model": "flaky"}
    return {"inputs": {"topic": {"type": "string", "default": "otters"}},
            "nodes": [{"id": "flaky", "type": "llm", "config": flaky,
                       "retry": {"max_attempts": 2, "backoff_s": 0.1, "jitter": False}},
                      {"id": "ask", "type": "llm", "config": ask, "inputs": {"after": "{{ flaky.text }}"}}],
            "outputs": {"answer": "{{ ask.text }}"}}


def _wait_for_run_span(collector: Collector, name: str, timeout_s: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [s for s in collector.spans if s["name"] == name]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no span {name!r} among {[s['name'] for s in collector.spans]}")


def test_a_run_is_one_trace_with_a_span_per_node_attempt_and_genai_spans(
        api: Any, client: Any, write_model: Any, start_worker: Any, collector: Collector) -> None:
    # Given models served by the fake provider (one fails its first two calls) and a worker
    # exporting to the loopback collector
    write_model("flaky", "fail_first=2:500")
    write_model("answerer", "echo")
    refresh(client)
    start_worker(env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100"})
    # When a run with a retried node and a model node runs to its end
    definition = _flaky_then_ask()
    workflow_id = api.create_workflow(definition)
    run = api.wait(api.submit(workflow_id), timeout_s=60)
    assert run["status"] == "succeeded", run
    assert api.node(run, "flaky")["attempts"] == 2
    run_span = _wait_for_run_span(collector, f"run {workflow_id}")
    time.sleep(0.5)  # the node spans were exported before the run's; nothing else is due
    # Then every span of the run is in one trace, whose id is the run's id
    spans = collector.spans
    assert {s["trace_id"] for s in spans} == {uuid.UUID(run["run_id"]).hex}
    assert run_span["parent_id"] == "" and run_span["service"] == "relayflow-worker"
    assert run_span["attributes"]["relayflow.run_id"] == run["run_id"]
    assert run_span["attributes"]["relayflow.status"] == "succeeded"
    # ... one span per node attempt (the retried node has two), each a child of the run's span
    nodes = sorted((s for s in spans if s["name"].startswith("node ")),
                   key=lambda s: (s["name"], s["attributes"]["relayflow.attempt"]))
    assert [(s["name"], s["attributes"]["relayflow.attempt"]) for s in nodes] == [
        ("node ask", 1), ("node flaky", 1), ("node flaky", 2)]
    assert all(s["parent_id"] == run_span["span_id"] for s in nodes)
    for span in nodes:
        assert span["attributes"]["relayflow.run_id"] == run["run_id"]
        assert span["attributes"]["relayflow.node_type"] == "llm"
        assert span["attributes"]["relayflow.space_id"] == "default"
        assert run_span["start"] <= span["start"] <= span["end"] <= run_span["end"]
    failed_attempt = nodes[1]
    assert failed_attempt["attributes"]["relayflow.outcome"] == "retry_scheduled"
    assert failed_attempt["status"] == 2  # STATUS_CODE_ERROR
    assert failed_attempt["attributes"]["relayflow.error.code"] > 0
    assert nodes[0]["attributes"]["relayflow.outcome"] == "succeeded"
    # ... and each model call is a GenAI `chat` span under its attempt, with the provider's usage
    chats = {s["parent_id"]: s for s in spans if s["name"].startswith("chat ")}
    assert set(chats) == {s["span_id"] for s in nodes}
    answered = chats[nodes[0]["span_id"]]
    usage = api.node(run, "ask")["usage"]
    assert answered["name"] == "chat echo"
    assert answered["attributes"]["gen_ai.operation.name"] == "chat"
    assert answered["attributes"]["gen_ai.provider.name"] == "openai"
    assert answered["attributes"]["gen_ai.request.model"] == "echo"
    assert answered["attributes"]["gen_ai.response.model"] == "echo"
    assert answered["attributes"]["gen_ai.request.temperature"] == 0.2
    assert answered["attributes"]["gen_ai.request.max_tokens"] == 64
    assert answered["attributes"]["gen_ai.usage.input_tokens"] == usage["input_tokens"] > 0
    assert answered["attributes"]["gen_ai.usage.output_tokens"] == usage["output_tokens"] > 0
    refused = chats[nodes[1]["span_id"]]
    assert refused["attributes"]["error.type"] == "InternalServerError" and refused["status"] == 2
    # ... with neither the prompt, nor the answer, nor the model's key in any attribute
    values = " ".join(str(v) for s in spans for v in s["attributes"].values())
    assert "otters" not in values and "Echo:" not in values and FAKE_KEY[3:20] not in values


def _collector_on(port: int) -> Collector | None:
    """A collector on `port`, or None while another holds the port."""
    try:
        return Collector(port)
    except OSError:
        return None


@pytest.mark.parametrize("disabled", [False, True], ids=["no-exporter", "sdk-disabled"])
def test_nothing_is_exported_when_no_exporter_is_configured(
        api: Any, start_worker: Any, disabled: bool) -> None:
    # Given a collector on the OTLP default port, and a worker with no exporter configured (or
    # one pointed at the collector but disabled by OTEL_SDK_DISABLED)
    # (both variants need the default port: one run in parallel waits for the other to free it)
    deadline = time.monotonic() + 120
    while (collector := _collector_on(OTLP_DEFAULT_PORT)) is None:
        if time.monotonic() > deadline:
            pytest.skip(f"port {OTLP_DEFAULT_PORT} is held by another process on this machine")
        time.sleep(0.5)
    try:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_SDK_DISABLED": "true"} if disabled else {}
        worker = start_worker(env={"OTEL_BSP_SCHEDULE_DELAY": "100", **env})
        # When a run runs
        workflow_id = api.create_workflow({"nodes": [
            {"id": "a", "type": "template", "config": {"template": "x"}},
            {"id": "b", "type": "template", "config": {"template": "{{ a.text }}y"}}]})
        run = api.wait(api.submit(workflow_id), timeout_s=30)
        # Then the worker ran it, and the collector received nothing
        assert run["status"] == "succeeded", run
        time.sleep(1.0)  # ten schedule delays: a configured exporter would have sent by now
        assert collector.requests == 0 and collector.spans == []
        assert "telemetry.configured" not in worker.log_path.read_text()
    finally:
        collector.stop()


def test_child_runs_join_their_top_runs_trace_under_their_parents_span(
        api: Any, start_worker: Any, collector: Collector) -> None:
    # Given top -> middle -> leaf (each a sub-workflow node), and a worker exporting traces
    api.create_workflow(leaf(), name="leaf")
    api.create_workflow(caller("leaf"), name="middle")
    top = api.create_workflow(caller("middle"), name="top")
    start_worker(env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100"})
    # When the top run runs
    run = api.wait(api.submit(top, {"text": "hi"}), timeout_s=60)
    assert run["status"] == "succeeded", run
    top_span = _wait_for_run_span(collector, f"run {top}")
    # Then the three runs' spans are in the top run's trace, each child under its parent's span
    runs = {s["attributes"]["relayflow.run_id"]: s for s in collector.spans if s["name"].startswith("run ")}
    assert len(runs) == 3 and {s["trace_id"] for s in collector.spans} == {uuid.UUID(run["run_id"]).hex}
    middle = next(s for s in runs.values() if s["attributes"].get("relayflow.parent_run_id") == run["run_id"])
    leaf_span = next(s for s in runs.values() if s["attributes"].get("relayflow.parent_run_id")
                     == middle["attributes"]["relayflow.run_id"])
    assert middle["parent_id"] == top_span["span_id"] and leaf_span["parent_id"] == middle["span_id"]
    assert middle["attributes"]["relayflow.depth"] == 1 and leaf_span["attributes"]["relayflow.depth"] == 2
    # ... and each run's node spans are under that run's span (`sub` waited for its child: delegated, then succeeded)
    for run_span in runs.values():
        nodes = [s for s in collector.spans if s["name"].startswith("node ")
                 and s["attributes"]["relayflow.run_id"] == run_span["attributes"]["relayflow.run_id"]]
        assert nodes and all(s["parent_id"] == run_span["span_id"] for s in nodes)
    subs = [s["attributes"]["relayflow.outcome"] for s in collector.spans if s["name"] == "node sub"
            and s["attributes"]["relayflow.run_id"] == run["run_id"]]
    assert subs == ["delegated", "succeeded"], subs


def test_a_run_cancelled_through_the_web_process_is_exported_by_it(
        start_web: Any, token: str, collector: Collector) -> None:
    # Given a web process exporting traces, and a run no worker takes (it stays queued)
    web = start_web(env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100"})
    with httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        created = http.post("/v1/workflows", json={"name": "wf", "definition": {"nodes": [
            {"id": "a", "type": "template", "config": {"template": "x"}}]}})
        assert created.status_code == 201, created.text
        workflow_id = created.json()["workflow_id"]
        run_id = http.post(f"/v1/workflows/{workflow_id}/runs", json={"inputs": {}}).json()["run_id"]
        # When it is cancelled through the API
        assert http.post(f"/v1/runs/{run_id}/cancel").status_code == 202
    # Then the web process exported the run's span, in the run's trace, as cancelled
    span = _wait_for_run_span(collector, f"run {workflow_id}")
    assert span["service"] == "relayflow-web" and span["trace_id"] == uuid.UUID(run_id).hex
    assert span["attributes"]["relayflow.status"] == "cancelled" and span["start"] <= span["end"]
    # ... and its access lines are JSON like the workers' lines
    assert [line["status"] for line in log_events(web.log_path, "http.request")] == ["201", "202", "202"]


def test_prompt_and_answer_are_on_model_spans_only_when_capture_is_on(
        api: Any, client: Any, write_model: Any, start_worker: Any, collector: Collector) -> None:
    # Given a worker exporting traces with content capture turned on
    write_model("answerer", "echo")
    refresh(client)
    start_worker(env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
                      "RELAYFLOW_OTEL_CAPTURE_CONTENT": "true"})
    # When a model node runs
    workflow_id = api.create_workflow({"inputs": {"topic": {"type": "string", "default": "otters"}}, "nodes": [
        {"id": "ask", "type": "llm", "config": {"model": "answerer", "prompt": "Tell me about {{ inputs.topic }}"}}]})
    run = api.wait(api.submit(workflow_id), timeout_s=60)
    assert run["status"] == "succeeded", run
    _wait_for_run_span(collector, f"run {workflow_id}")
    # Then its chat span holds the messages sent and the answer (GenAI message JSON), and no key
    chat = next(s for s in collector.spans if s["name"] == "chat echo")
    sent = json.loads(chat["attributes"]["gen_ai.input.messages"])
    answer = json.loads(chat["attributes"]["gen_ai.output.messages"])
    assert sent[-1] == {"role": "user", "parts": [{"type": "text", "content": "Tell me about otters"}]}
    assert answer == [{"role": "assistant", "parts": [{"type": "text", "content": "Echo: Tell me about otters"}]}]
    assert FAKE_KEY[3:20] not in json.dumps(chat["attributes"])
