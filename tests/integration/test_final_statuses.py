"""Nodes that never ran end `cancelled` when their run fails or is cancelled, in the run object
and in Postgres (the statement that ends the run writes them), and their late messages are no-ops.

Graph semantics run on the in-process worker; the cancel racing a sleeping node runs on a real
worker process."""
from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from engine.settings import Settings
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

RAISE = "def main(inputs):\n    raise RuntimeError('broken on purpose')\n"
NO_RETRY = {"max_attempts": 1}


def _sql(settings: Settings, query: str, *params: Any) -> list[tuple[Any, ...]]:
    url = (settings.database_url or "").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def _node_rows(settings: Settings, run_id: str) -> dict[str, tuple[str, int]]:
    """node_id → (status, attempts) as stored, for every node row of the run."""
    rows = _sql(settings, "SELECT node_id, status, attempts FROM node_runs WHERE run_id = %s", run_id)
    return {node_id: (status, attempts) for node_id, status, attempts in rows}


def _started(settings: Settings, run_id: str) -> set[str]:
    """Nodes of the run that ever recorded a `node.started` event."""
    rows = _sql(settings, "SELECT DISTINCT node_id FROM run_events WHERE run_id = %s AND type = 'node.started'",
                run_id)
    return {r[0] for r in rows}


def _events(settings: Settings, run_id: str, node_id: str) -> list[str]:
    """The event types recorded for one node of the run, in order."""
    rows = _sql(settings, "SELECT type FROM run_events WHERE run_id = %s AND node_id = %s ORDER BY id",
                run_id, node_id)
    return [r[0] for r in rows]


def test_downstream_nodes_of_a_node_that_fails_the_run_end_cancelled(api: Any, inline_worker: Any,
                                                                     settings: Settings) -> None:
    # Given a chain and a join behind a first node that fails the run (on_error fail)
    workflow_id = api.create_workflow({"nodes": [
        {"id": "first", "type": "code", "retry": NO_RETRY, "config": {"code": RAISE}},
        {"id": "second", "type": "template", "config": {"template": "{{ first.x }}"}},
        {"id": "third", "type": "template", "config": {"template": "{{ second.text }}"}},
        {"id": "side", "type": "template", "after": ["first"], "config": {"template": "side"}},
        {"id": "join", "type": "aggregator", "inputs": {"values": ["{{ third.text }}", "{{ side.text }}"]}},
    ]})
    # When the run executes
    run = api.wait(api.submit(workflow_id))
    # Then the run failed at `first` and every node that never ran reads `cancelled`, not `waiting`
    assert run["status"] == "failed" and run["error"]["node_id"] == "first", run
    assert {n["node_id"]: n["status"] for n in run["nodes"]} == {
        "first": "failed", "second": "cancelled", "third": "cancelled", "side": "cancelled", "join": "cancelled"}
    assert all(n["attempts"] == 0 and n["finished_at"] for n in run["nodes"] if n["status"] == "cancelled")
    # And Postgres holds those final rows (the run object does not invent them)
    assert _node_rows(settings, run["run_id"]) == {
        "first": ("failed", 1), "second": ("cancelled", 0), "third": ("cancelled", 0),
        "side": ("cancelled", 0), "join": ("cancelled", 0)}


def test_cancelling_a_run_while_a_node_sleeps_ends_its_unstarted_nodes_cancelled(api: Any, start_worker: Any,
                                                                                 settings: Settings) -> None:
    # Given a run whose first node sleeps, with two nodes behind it
    start_worker()
    run_id = api.submit(api.create_workflow({"nodes": [
        {"id": "nap", "type": "sleep", "config": {"seconds": 2}},
        {"id": "next", "type": "template", "after": ["nap"], "config": {"template": "never"}},
        {"id": "last", "type": "template", "config": {"template": "{{ next.text }}"}},
    ]}))
    wait_for(lambda: api.node(api.run(run_id), "nap")["status"] == "running")
    # When it is cancelled mid-sleep, and the sleeping attempt then ends
    assert api.client.post(f"/v1/runs/{run_id}/cancel").status_code == 202
    time.sleep(2.5)
    # Then the run and all its nodes are cancelled, stored so, and nothing behind `nap` started
    run = api.run(run_id)
    assert run["status"] == "cancelled"
    assert [(n["node_id"], n["status"]) for n in run["nodes"]] == [
        ("nap", "cancelled"), ("next", "cancelled"), ("last", "cancelled")]
    assert _node_rows(settings, run_id) == {"nap": ("cancelled", 1), "next": ("cancelled", 0),
                                            "last": ("cancelled", 0)}
    assert _started(settings, run_id) == {"nap"}


def test_a_failing_branch_cancels_the_queued_node_of_the_other_branch(api: Any, inline_worker: Any,
                                                                      settings: Settings) -> None:
    # Given one worker running one message at a time, so one branch's node waits in the queue
    # while the other runs
    workflow_id = api.create_workflow({"nodes": [
        {"id": "bad", "type": "code", "retry": NO_RETRY, "config": {"code": RAISE}},
        {"id": "other", "type": "sleep", "config": {"seconds": 0.5}},
        {"id": "other_next", "type": "template", "after": ["other"], "config": {"template": "after"}},
        {"id": "join", "type": "template", "after": ["bad", "other_next"], "config": {"template": "joined"}},
    ]})
    # When the failing branch fails the run (whichever branch the thread took first)
    run_id = api.submit(workflow_id)
    assert api.wait(run_id)["status"] == "failed"
    inline_worker.drain()  # the queued node's message arrives after the run ended
    # Then the other branch's node that was queued ends cancelled without ever starting,
    # its late message was a no-op, and no node of the run is left waiting
    run = api.run(run_id)
    statuses = {n["node_id"]: n["status"] for n in run["nodes"]}
    assert statuses["bad"] == "failed" and statuses["join"] == "cancelled"
    never_ran = {n for n in ("other", "other_next") if statuses[n] == "cancelled"}
    assert never_ran and all(statuses[n] == "succeeded" for n in {"other", "other_next"} - never_ran), statuses
    assert not never_ran & _started(settings, run_id)
    rows = _node_rows(settings, run_id)
    assert set(rows) == set(statuses) and all(rows[n] == ("cancelled", 0) for n in never_ran | {"join"})


def test_a_retrying_node_of_a_failed_run_ends_cancelled_and_its_due_retry_is_a_no_op(
        api: Any, inline_worker: Any, settings: Settings) -> None:
    # Given a node waiting for its retry while another branch is about to fail the run
    workflow_id = api.create_workflow({"nodes": [
        {"id": "flaky", "type": "code", "retry": {"max_attempts": 3, "backoff_s": 4, "max_backoff_s": 4, "jitter": False},
         "config": {"code": RAISE}},
        {"id": "flaky_next", "type": "template", "config": {"template": "{{ flaky.x }}"}},
        {"id": "nap", "type": "sleep", "config": {"seconds": 0.7}},
        {"id": "bad", "type": "code", "retry": NO_RETRY, "after": ["nap"], "config": {"code": RAISE}},
    ]})
    run_id = api.submit(workflow_id)
    while api.node(api.run(run_id), "flaky")["status"] != "retrying":
        assert inline_worker.run_next(), "flaky never failed its first attempt"
    # When `bad` fails the run, and the retry's delayed message comes due afterwards
    # (draining waits for it: it is due 4 s after `flaky` failed, after the run failed)
    run = api.wait(run_id)
    assert run["status"] == "failed" and run["error"]["node_id"] == "bad", run
    assert len(inline_worker.messages) == 0
    # Then the retrying node stays cancelled after its one attempt, and nothing behind it ran
    run = api.run(run_id)
    assert {n["node_id"]: (n["status"], n["attempts"]) for n in run["nodes"]} == {
        "flaky": ("cancelled", 1), "flaky_next": ("cancelled", 0), "nap": ("succeeded", 1), "bad": ("failed", 1)}
    assert _node_rows(settings, run_id)["flaky_next"] == ("cancelled", 0)
    assert _events(settings, run_id, "flaky") == ["node.started", "node.retrying"]


def test_a_run_ended_without_rows_for_its_unreached_nodes_still_shows_them_cancelled(api: Any,
                                                                                    settings: Settings) -> None:
    # Given a run cancelled before any worker took it, stored as a run ended by an older release
    # would be: no row for the nodes it never reached
    run_id = api.submit(api.create_workflow({"nodes": [
        {"id": "a", "type": "template", "config": {"template": "x"}},
        {"id": "b", "type": "template", "config": {"template": "{{ a.text }}"}}]}))
    assert api.client.post(f"/v1/runs/{run_id}/cancel").status_code == 202
    _sql(settings, "DELETE FROM node_runs WHERE run_id = %s AND node_id = 'b'", run_id)
    # When it is read
    run = api.run(run_id)
    # Then the unreached node reads `cancelled` too, never `waiting`
    assert [(n["node_id"], n["status"]) for n in run["nodes"]] == [("a", "cancelled"), ("b", "cancelled")]
