"""Workers warm LiteLLM at start (workers/runtime.py, `Hub.warm`): off the message path, and an LLM
node that arrives meanwhile waits for the same work instead of doing it twice or deadlocking."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from api.localstack.fake_llm import FakeLLM
from tests.conftest import wait_for
from tests.log_lines import log_events

pytestmark = pytest.mark.integration
WARM = {"RELAYFLOW_WORKER_WARM_LLM": "true"}


def _lines(log: str, event: str) -> list[dict[str, Any]]:
    return log_events(log, event)


def _warm_log(log: str) -> str | None:
    return log if _lines(log, "worker.llm_warm") else None


def _ts(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00"))


def test_an_llm_node_sent_during_the_warm_up_waits_for_it_and_the_router_is_built_once(
        api: Any, fake_llm: FakeLLM, write_model: Any, start_worker: Any) -> None:
    # Given an LLM node's run already queued when a worker process starts (and warms up)
    write_model("fast")
    definition = {"nodes": [{"id": "ask", "type": "llm", "config": {"model": "fast", "prompt": "Hello there"}}],
                  "outputs": {"answer": "{{ ask.text }}"}}
    run_id = api.submit(api.create_workflow(definition))
    worker = start_worker(processes=1, env=WARM)
    # When the run ends
    run = api.wait(run_id, timeout_s=180)
    # Then the node succeeded, through the fake provider
    assert run["status"] == "succeeded", run
    assert run["outputs"]["answer"] and fake_llm.calls
    # and the warm-up finished too, after the node had started: the two really overlapped
    log = wait_for(lambda: _warm_log(worker.log_path.read_text()), timeout_s=180)
    warmed = _lines(log, "worker.llm_warm")
    assert len(warmed) == 1, log
    started = datetime.fromisoformat(api.node(run, "ask")["started_at"])
    assert started < _ts(warmed[0]), (started, warmed)
    # and the process built its model router once, not once for the node and once for the warm-up
    assert len(_lines(log, "models.router_built")) == 1, log


def test_a_worker_that_warmed_up_answers_llm_nodes(api: Any, fake_llm: FakeLLM, write_model: Any,
                                                   start_worker: Any) -> None:
    # Given a worker process that has warmed up (with a model in the registry)
    write_model("fast")
    worker = start_worker(processes=1, env=WARM)
    wait_for(lambda: _lines(worker.log_path.read_text(), "worker.llm_warm"), timeout_s=180)
    # When an LLM node runs
    definition = {"nodes": [{"id": "ask", "type": "llm", "config": {"model": "fast", "prompt": "Hi"}}],
                  "outputs": {"answer": "{{ ask.text }}"}}
    run = api.wait(api.submit(api.create_workflow(definition)), timeout_s=60)
    # Then it succeeds: the mocked warm-up call left nothing behind that a real call trips on
    assert run["status"] == "succeeded", run
    assert sum(fake_llm.calls.values()) == 1  # the warm-up itself never reached the provider
    assert len(_lines(worker.log_path.read_text(), "models.router_built")) == 1
