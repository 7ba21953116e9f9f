"""A real worker process's log: one JSON object per line, one line per run and node transition with
the run, node, attempt and space ids, and never a secret."""
from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.integration.llm_fixtures import FAKE_KEY
from tests.integration.test_llm_node import refresh
from tests.log_lines import log_events

pytestmark = pytest.mark.integration


def _workflow() -> dict[str, Any]:
    """A model node failing its first attempt (two 500s), then a template node and a branch never taken."""
    ask = {"model": "flaky", "system_prompt": "Be brief.", "prompt": "Tell me about {{ inputs.topic }}"}
    return {"inputs": {"topic": {"type": "string", "default": "otters"}},
            "nodes": [{"id": "ask", "type": "llm", "config": ask,
                       "retry": {"max_attempts": 2, "backoff_s": 0.1, "jitter": False}},
                      {"id": "shout", "type": "template", "config": {"template": "{{ ask.text }}!"}}],
            "outputs": {"answer": "{{ shout.text }}"}}


def _lines(text: str) -> list[dict[str, Any]]:
    """Every line of the log as JSON (failing on the first that is not)."""
    parsed = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
    return parsed


def test_a_worker_logs_one_json_line_per_run_and_node_transition_without_secrets(
        api: Any, client: Any, token: str, write_model: Any, start_worker: Any) -> None:
    # Given a model that fails its first two calls (the first attempt) and a worker with default logging
    write_model("flaky", "fail_first=2:500")
    refresh(client)
    worker = start_worker()
    # When a run with a retried model node and a second node runs
    run = api.wait(api.submit(api.create_workflow(_workflow())), timeout_s=60)
    assert run["status"] == "succeeded", run
    assert api.node(run, "ask")["attempts"] == 2
    # (the run's end line is written just after the commit the API saw: wait for it, then stop)
    wait_for(lambda: log_events(worker.log_path, "run.succeeded"), timeout_s=15)
    worker.kill()  # its log is complete
    text = worker.log_path.read_text()
    # Then every line of the worker's log is a JSON object
    lines = _lines(text)
    assert lines and all(isinstance(line, dict) and {"ts", "level", "logger"} <= set(line) for line in lines)
    mine = [line for line in lines if line.get("run_id") == run["run_id"]]
    events = [(line["event"], line.get("node_id"), line.get("attempt")) for line in mine]
    # ... the run's transitions are there, in order, with their ids
    assert events == [
        ("run.started", "ask", None),
        ("node.started", "ask", 1), ("node.retry_scheduled", "ask", 1),
        ("node.started", "ask", 2), ("node.succeeded", "ask", 2),
        ("node.started", "shout", 1), ("node.succeeded", "shout", 1),
        ("run.succeeded", None, None)], events
    assert all(line["space_id"] == "default" for line in mine)
    assert {line["level"] for line in mine if line["event"].startswith("node.")} <= {"info", "warning"}
    assert all(line["level"] == "info" for line in mine if line["event"] in ("node.started", "node.succeeded"))
    retry = next(line for line in mine if line["event"] == "node.retry_scheduled")
    assert retry["outcome"] == "retry_scheduled" and retry["code"] and retry["max_attempts"] == 2
    assert next(line for line in mine if line["event"] == "node.started")["node_type"] == "llm"
    # ... and no line holds the model's API key or the space token
    for secret in (FAKE_KEY, FAKE_KEY[3:20], token, token[-16:]):
        assert secret not in text


def test_logfmt_stays_available_and_the_level_setting_still_filters(
        api: Any, start_worker: Any) -> None:
    # Given a worker logging logfmt pairs at WARNING
    worker = start_worker(env={"RELAYFLOW_LOG_FORMAT": "logfmt", "RELAYFLOW_LOG_LEVEL": "WARNING"})
    # When a run fails a node
    run = api.wait(api.submit(api.create_workflow({"nodes": [
        {"id": "bad", "type": "json_parse", "inputs": {"text": "not json"}, "retry": {"max_attempts": 1}}]})))
    assert run["status"] == "failed", run
    # (the run's end line is written just after the commit the API saw: wait for it, then stop)
    wait_for(lambda: "event=run.failed" in worker.log_path.read_text(), timeout_s=15)
    worker.kill()
    text = worker.log_path.read_text()
    # Then the failure is a logfmt line, and INFO transitions (node.started) are not logged
    failed = [line for line in text.splitlines() if "event=node.failed" in line]
    assert len(failed) == 1 and f"run_id={run['run_id']}" in failed[0] and "node_id=bad" in failed[0], text
    assert "event=run.failed" in text and "event=node.started" not in text
