"""The durable run lifecycle end to end: API → Postgres → worker.

Graph semantics (branches, joins, skips, retries, on_error) run on the in-process worker;
what needs a real process (parallel workers, timeouts, deadlines, a cancel racing a node)
runs on real `dramatiq` worker processes.
"""
from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration

LINEAR = {
    "inputs": {"name": {"type": "string", "required": True}},
    "nodes": [
        {"id": "greet", "type": "template", "config": {"template": "Hello {{ inputs.name }}"}},
        {"id": "shout", "type": "template", "config": {"template": "{{ greet.text | upper }}!"}},
    ],
    "outputs": {"message": "{{ shout.text }}", "original": "{{ inputs.name }}"},
}


def test_linear_run_succeeds_with_outputs_and_node_history(api: Any, inline_worker: Any) -> None:
    # Given a two-node workflow
    workflow_id = api.create_workflow(LINEAR)
    # When a run is submitted
    run_id = api.submit(workflow_id, {"name": "Ada 🚀"})
    run = api.wait(run_id)
    # Then it succeeds, with rendered outputs and every node checkpointed once
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"message": "HELLO ADA 🚀!", "original": "Ada 🚀"}
    assert [(n["node_id"], n["status"], n["attempts"]) for n in run["nodes"]] == [
        ("greet", "succeeded", 1), ("shout", "succeeded", 1)]
    assert run["started_at"] and run["finished_at"]


BRANCHING = {
    "inputs": {"priority": {"type": "integer", "default": 1}},
    "nodes": [
        {"id": "route", "type": "selector", "config": {"branches": [
            {"name": "urgent", "conditions": [{"left": "{{ inputs.priority }}", "op": ">=", "right": 3}]}]}},
        {"id": "page", "type": "template", "after": ["route.urgent"], "config": {"template": "paged"}},
        {"id": "page_log", "type": "template", "config": {"template": "{{ page.text }} and logged"}},
        {"id": "queue", "type": "template", "after": ["route.else"], "config": {"template": "queued"}},
        {"id": "join", "type": "aggregator", "inputs": {"values": ["{{ page_log.text }}", "{{ queue.text }}"]}},
    ],
    "outputs": {"result": "{{ join.value }}"},
}


@pytest.mark.parametrize(("priority", "expected", "ran", "skipped"), [
    (5, "paged and logged", {"page", "page_log"}, {"queue"}),
    (1, "queued", {"queue"}, {"page", "page_log"}),
])
def test_branches_skip_the_path_not_taken_and_join(api: Any, inline_worker: Any, priority: int, expected: str,
                                                   ran: set[str], skipped: set[str]) -> None:
    # Given a selector with two branches joined by an aggregator
    workflow_id = api.create_workflow(BRANCHING)
    # When a run takes one branch
    run = api.wait(api.submit(workflow_id, {"priority": priority}))
    # Then the other branch (and everything only it feeds) is skipped and the join runs once
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"result": expected}
    statuses = {n["node_id"]: n["status"] for n in run["nodes"]}
    assert {n for n in ran if statuses[n] == "succeeded"} == ran
    assert {n for n in skipped if statuses[n] == "skipped"} == skipped
    assert statuses["join"] == "succeeded"


def test_independent_branches_run_in_parallel_on_different_workers(api: Any, start_worker: Any) -> None:
    # Given two worker processes of one thread each and two independent slow nodes
    start_worker(processes=2, threads=1)
    workflow_id = api.create_workflow({"nodes": [
        {"id": "left", "type": "sleep", "config": {"seconds": 1.5}},
        {"id": "right", "type": "sleep", "config": {"seconds": 1.5}},
        {"id": "both", "type": "template", "config": {"template": "{{ left.slept_s }}+{{ right.slept_s }}"}},
    ], "outputs": {"total": "{{ both.text }}"}})
    # When the run executes
    run = api.wait(api.submit(workflow_id))
    # Then the two branches overlapped in time (neither waited for the other)
    assert run["status"] == "succeeded", run
    left, right = api.node(run, "left"), api.node(run, "right")
    assert left["started_at"] < right["finished_at"] and right["started_at"] < left["finished_at"]
    assert run["outputs"] == {"total": "1.5+1.5"}


def test_failing_node_exhausts_retries_and_fails_the_run_with_its_error(api: Any, inline_worker: Any) -> None:
    workflow_id = api.create_workflow({"nodes": [
        {"id": "flaky", "type": "code", "retry": {"max_attempts": 3, "backoff_s": 0.1, "max_backoff_s": 0.2},
         "config": {"code": "def main(inputs):\n    raise RuntimeError('upstream said no')\n"}},
        {"id": "after", "type": "template", "config": {"template": "{{ flaky.x }}"}},
    ]})
    run = api.wait(api.submit(workflow_id))
    assert run["status"] == "failed"
    assert run["error"]["node_id"] == "flaky"
    assert "upstream said no" in run["error"]["message"]
    flaky = api.node(run, "flaky")
    assert flaky["status"] == "failed" and flaky["attempts"] == 3
    assert len(flaky["attempt_errors"]) == 3
    assert api.node(run, "after")["status"] == "cancelled"


def test_on_error_default_continues_with_the_declared_default_output(api: Any, inline_worker: Any) -> None:
    workflow_id = api.create_workflow({"nodes": [
        {"id": "parse", "type": "json_parse", "inputs": {"text": "not json"},
         "on_error": "default", "default_output": {"value": {"fallback": True}}},
        {"id": "use", "type": "json_serialize", "inputs": {"value": "{{ parse.value }}"}},
    ], "outputs": {"text": "{{ use.text }}", "ok": "{{ parse.is_success }}"}})
    run = api.wait(api.submit(workflow_id))
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"text": '{"fallback": true}', "ok": False}
    parse = api.node(run, "parse")
    assert parse["status"] == "failed" and parse["error"]["message"]


def test_on_error_branch_takes_the_error_port_and_skips_the_success_path(api: Any, inline_worker: Any) -> None:
    workflow_id = api.create_workflow({"nodes": [
        {"id": "parse", "type": "json_parse", "inputs": {"text": "{broken"}, "on_error": "branch"},
        {"id": "happy", "type": "json_serialize", "inputs": {"value": "{{ parse.value }}"}},
        {"id": "sad", "type": "template", "after": ["parse.error"],
         "config": {"template": "could not parse: {{ parse.error.message }}"}},
        {"id": "out", "type": "aggregator", "inputs": {"values": ["{{ happy.text }}", "{{ sad.text }}"]}},
    ], "outputs": {"result": "{{ out.value }}"}})
    run = api.wait(api.submit(workflow_id))
    assert run["status"] == "succeeded", run
    assert run["outputs"]["result"].startswith("could not parse: ")
    assert api.node(run, "happy")["status"] == "skipped"
    assert api.node(run, "sad")["status"] == "succeeded"


def test_node_timeout_fails_the_attempt(api: Any, start_worker: Any) -> None:
    start_worker()
    workflow_id = api.create_workflow({"nodes": [
        {"id": "slow", "type": "sleep", "timeout_s": 0.3, "config": {"seconds": 5}}]})
    run = api.wait(api.submit(workflow_id))
    assert run["status"] == "failed"
    assert api.node(run, "slow")["error"]["kind"] == "timeout"


def test_run_deadline_fails_a_run_that_takes_too_long(api: Any, start_worker: Any) -> None:
    start_worker()
    api.warm_up()  # the 3 s deadline must not be spent on the worker's start-up
    workflow_id = api.create_workflow({"deadline_s": 3, "nodes": [
        {"id": "a", "type": "sleep", "config": {"seconds": 0.2}},
        {"id": "b", "type": "sleep", "after": ["a"], "config": {"seconds": 0.2}},
        {"id": "c", "type": "sleep", "after": ["b"], "timeout_s": 60, "config": {"seconds": 30}},
    ]})
    run = api.wait(api.submit(workflow_id))
    assert run["status"] == "failed"
    assert run["error"]["node_id"] == "c"
    assert "deadline" in run["error"]["message"]
    assert api.node(run, "a")["status"] == api.node(run, "b")["status"] == "succeeded"


def test_cancel_stops_a_running_run_and_a_second_cancel_is_409(api: Any, start_worker: Any) -> None:
    start_worker()
    workflow_id = api.create_workflow({"nodes": [
        {"id": "long", "type": "sleep", "config": {"seconds": 2}},
        {"id": "next", "type": "template", "after": ["long"], "config": {"template": "never"}},
    ]})
    run_id = api.submit(workflow_id)
    from tests.conftest import wait_for
    wait_for(lambda: api.node(api.run(run_id), "long")["status"] == "running")
    assert api.client.post(f"/v1/runs/{run_id}/cancel").status_code == 202
    again = api.client.post(f"/v1/runs/{run_id}/cancel")
    assert again.status_code == 409 and again.get_json()["code"] != 0
    import time
    time.sleep(2.5)  # let the sleeping attempt end: its commit must not revive the run
    run = api.run(run_id)
    assert run["status"] == "cancelled"
    assert api.node(run, "long")["status"] == "cancelled"
    assert api.node(run, "next")["status"] == "cancelled"


def test_idempotency_key_returns_the_same_run(api: Any) -> None:
    workflow_id = api.create_workflow(LINEAR)
    first = api.submit(workflow_id, {"name": "x"}, idempotency_key="order-42")
    second = api.submit(workflow_id, {"name": "x"}, idempotency_key="order-42")
    other = api.submit(workflow_id, {"name": "x"}, idempotency_key="order-43")
    assert first == second != other
    assert len(api.client.get(f"/v1/runs?workflow_id={workflow_id}").get_json()["runs"]) == 2
