"""The `workflow` node: a child run per attempt, decided by the child's end, cancelled with its parent.

Graph semantics run on the in-process worker (`inline_worker`); the one crash test uses a real
worker process.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from tests.conftest import ApiHelper, wait_for

pytestmark = pytest.mark.integration


def leaf(name: str = "leaf") -> dict[str, Any]:
    """A workflow that shouts its input."""
    return {"inputs": {"text": {"type": "string", "required": True}},
            "nodes": [{"id": "shout", "type": "template", "config": {"template": "{{ inputs.text | upper }}!"}}],
            "outputs": {"text": "{{ shout.text }}", "by": name}}


def caller(callee: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A workflow whose `sub` node runs `callee` with its own input, and passes the result on."""
    return {"inputs": {"text": {"type": "string", "required": True}},
            "nodes": [{"id": "sub", "type": "workflow", "config": {"workflow": callee},
                       "inputs": {"text": "{{ inputs.text }} via " + callee}, **(extra or {})},
                      {"id": "after", "type": "template", "config": {"template": "[{{ sub.text }}]"}}],
            "outputs": {"text": "{{ after.text }}"}}


def children(api: ApiHelper, run_id: str) -> list[dict[str, Any]]:
    response = api.client.get(f"/v1/runs?parent={run_id}")
    assert response.status_code == 200, response.get_json()
    return list(response.get_json()["runs"])


def descendants(api: ApiHelper, run_id: str) -> list[dict[str, Any]]:
    found = []
    for child in children(api, run_id):
        found.append(api.run(child["run_id"]))
        found.extend(descendants(api, child["run_id"]))
    return found


def test_a_subworkflow_three_levels_deep_passes_the_outputs_up(api: ApiHelper, inline_worker: Any) -> None:
    # Given top → middle → leaf, each calling the next by name
    api.create_workflow(leaf(), name="leaf")
    api.create_workflow(caller("leaf"), name="middle")
    top = api.create_workflow(caller("middle"), name="top")
    # When the top run runs
    run = api.wait(api.submit(top, {"text": "hi"}))
    # Then it succeeds with the leaf's output passed up through both callers
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"text": "[[HI VIA MIDDLE VIA LEAF!]]"}
    assert api.node(run, "sub")["output"] == {"text": "[HI VIA MIDDLE VIA LEAF!]"}
    assert api.node(run, "sub")["attempts"] == 1
    # And each child is a run of the same space, listed under its parent, pointing back at it
    [middle] = children(api, run["run_id"])
    assert middle["parent_run_id"] == run["run_id"] and middle["parent_node_id"] == "sub"
    [leaf_run] = children(api, middle["run_id"])
    leaf_object = api.run(leaf_run["run_id"])
    assert leaf_object["status"] == "succeeded"
    assert leaf_object["outputs"] == {"text": "HI VIA MIDDLE VIA LEAF!", "by": "leaf"}
    assert leaf_object["parent_run_id"] == middle["run_id"]
    # And a run without children lists none
    assert children(api, leaf_run["run_id"]) == []


def test_duplicate_messages_of_a_child_or_its_parent_change_nothing(api: ApiHelper, inline_worker: Any) -> None:
    api.create_workflow(leaf(), name="leaf")
    run_id = api.submit(api.create_workflow(caller("leaf"), name="top"), {"text": "x"})
    run = api.wait(run_id)
    [child] = children(api, run_id)
    before = (api.run(run_id), api.run(child["run_id"]))
    # When every message of the parent and of the child is delivered again
    for node_id in ("sub", "after"):
        inline_worker.messages.send(run_id, node_id)
    inline_worker.messages.send(child["run_id"], "shout")
    assert inline_worker.drain() == 3
    # Then nothing changed: one child, the same outputs and attempts, no new run
    assert (api.run(run_id), api.run(child["run_id"])) == before
    assert len(children(api, run_id)) == 1
    assert run["status"] == "succeeded"


ASKING_LEAF = {
    "inputs": {"text": {"type": "string"}},
    "nodes": [{"id": "ask", "type": "question", "config": {"question": "go on?", "answer_type": "text"}},
              {"id": "then", "type": "template", "after": ["ask"], "config": {"template": "{{ ask.answer }}"}}],
    "outputs": {"text": "{{ then.text }}"},
}


def test_cancelling_the_top_run_cancels_every_live_descendant(api: ApiHelper, inline_worker: Any) -> None:
    # Given top → middle → a leaf that waits for a person (so the whole chain is live)
    api.create_workflow(ASKING_LEAF, name="asking")
    api.create_workflow(caller("asking"), name="middle")
    top_id = api.submit(api.create_workflow(caller("middle"), name="top"), {"text": "x"})
    inline_worker.drain()
    [middle] = descendants(api, top_id)[:1]
    leaf_run = descendants(api, top_id)[1]
    assert api.run(top_id)["status"] == "running" and api.node(api.run(top_id), "sub")["status"] == "delegated"
    assert leaf_run["status"] == "interrupted"
    # When the top run is cancelled
    reply = api.client.post(f"/v1/runs/{top_id}/cancel")
    assert reply.status_code == 202, reply.get_json()
    # Then every descendant is cancelled with it, in the same statement
    assert [r["status"] for r in descendants(api, top_id)] == ["cancelled", "cancelled"]
    assert api.node(api.run(top_id), "sub")["status"] == "cancelled"
    # And no node of theirs starts afterwards: the question cannot be answered, late messages are no-ops
    event = leaf_run["interrupt"]["event_id"]
    reply = api.client.post(f"/v1/runs/{leaf_run['run_id']}/resume", json={"event_id": event, "data": "yes"})
    assert reply.status_code == 409
    inline_worker.messages.send(leaf_run["run_id"], "then")
    inline_worker.messages.send(middle["run_id"], "after")
    inline_worker.drain()
    leaf_after = api.run(leaf_run["run_id"])
    assert api.node(leaf_after, "then")["status"] == "cancelled" and api.node(leaf_after, "then")["attempts"] == 0
    middle_after = api.run(middle["run_id"])
    assert api.node(middle_after, "after")["status"] == "cancelled"
    assert api.node(middle_after, "after")["attempts"] == 0


def test_cancelling_a_child_fails_its_parent_node(api: ApiHelper, inline_worker: Any) -> None:
    api.create_workflow(ASKING_LEAF, name="asking")
    top_id = api.submit(api.create_workflow(caller("asking"), name="top"), {"text": "x"})
    inline_worker.drain()
    [child] = children(api, top_id)
    assert api.client.post(f"/v1/runs/{child['run_id']}/cancel").status_code == 202
    run = api.wait(top_id)
    assert run["status"] == "failed"
    assert run["error"]["node_id"] == "sub"
    assert "cancelled" in run["error"]["message"] and child["run_id"] in run["error"]["message"]


def test_a_workflow_that_calls_itself_is_refused_at_save(api: ApiHelper) -> None:
    # Directly
    reply = api.client.post("/v1/workflows", json={"name": "selfish", "definition": caller("selfish")})
    assert reply.status_code == 422
    body = reply.get_json()
    assert "sub" in str(body) and "selfish → selfish" in str(body)
    # Or through another workflow: a → b, then b saved to call a
    b = api.create_workflow(leaf("b"), name="b")
    api.create_workflow(caller("b"), name="a")
    reply = api.client.put(f"/v1/workflows/{b}", json={"definition": caller("a")})
    assert reply.status_code == 422, reply.get_json()
    assert "b → a → b" in str(reply.get_json())
    # A workflow of another space, or none, is not found, naming the node
    reply = api.client.post("/v1/workflows", json={"name": "lost", "definition": caller("nowhere")})
    assert reply.status_code == 422
    assert "sub" in str(reply.get_json()) and "nowhere not found" in str(reply.get_json())


def test_runs_nested_deeper_than_the_setting_fail_naming_the_chain(api: ApiHelper, inline_worker: Any) -> None:
    inline_worker.executor.settings = inline_worker.executor.settings.model_copy(update={"max_run_depth": 1})
    api.create_workflow(leaf(), name="leaf")
    api.create_workflow(caller("leaf"), name="middle")
    run = api.wait(api.submit(api.create_workflow(caller("middle"), name="top"), {"text": "x"}))
    assert run["status"] == "failed"
    assert run["error"]["node_id"] == "sub"
    assert "top → middle → leaf" in run["error"]["message"]
    assert "RELAYFLOW_MAX_RUN_DEPTH" in run["error"]["message"]


class _FlakyOnce(BaseHTTPRequestHandler):
    calls = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).calls += 1
        status = 500 if type(self).calls == 1 else 200
        payload = b'{"n": %d}' % type(self).calls
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def flaky_url() -> Iterator[str]:
    _FlakyOnce.calls = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyOnce)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def fetching(url: str) -> dict[str, Any]:
    return {"inputs": {"text": {"type": "string"}},
            "nodes": [{"id": "fetch", "type": "http", "config": {"url": url}}],
            "outputs": {"status": "{{ fetch.status_code }}"}}


def test_a_failed_child_is_retried_as_a_new_child_run(api: ApiHelper, inline_worker: Any, flaky_url: str) -> None:
    # Given a child that fails once (its server answers 500, then 200) and a parent node with retry
    api.create_workflow(fetching(flaky_url), name="flaky")
    top = api.create_workflow(caller("flaky", {"retry": {"max_attempts": 2, "backoff_s": 0.1}}), name="top")
    run = api.wait(api.submit(top, {"text": "x"}))
    # Then the parent node's second attempt started a second child, which succeeded
    assert run["status"] == "succeeded", run
    sub = api.node(run, "sub")
    assert sub["attempts"] == 2 and sub["output"] == {"status": 200}
    statuses = sorted(c["status"] for c in children(api, run["run_id"]))
    assert statuses == ["failed", "succeeded"]
    assert "child run" in sub["attempt_errors"][0]["error"]["message"]


def test_on_error_default_applies_to_a_failed_child(api: ApiHelper, inline_worker: Any, flaky_url: str) -> None:
    api.create_workflow(fetching(flaky_url), name="flaky")
    top = api.create_workflow(caller("flaky", {"on_error": "default", "default_output": {"status": -1}}),
                              name="top")
    run = api.wait(api.submit(top, {"text": "x"}))
    assert run["status"] == "succeeded", run
    sub = api.node(run, "sub")
    assert sub["status"] == "failed" and sub["output"]["status"] == -1 and sub["output"]["is_success"] is False
    assert run["outputs"] == {"text": "[]"}


SLOW_LEAF = {"inputs": {"text": {"type": "string"}},
             "nodes": [{"id": "slow", "type": "sleep", "config": {"seconds": 3}}],
             "outputs": {"slept": "{{ slow.slept_s }}"}}


def test_kill_9_of_the_worker_while_a_child_runs_still_ends_the_parent_once(
        api: ApiHelper, start_worker: Any, settings: Any) -> None:
    # Given a real worker running a child's slow node while its parent node waits
    api.create_workflow(SLOW_LEAF, name="slow-leaf")
    worker = start_worker()
    run_id = api.submit(api.create_workflow(caller("slow-leaf"), name="top"), {"text": "x"})

    def child_running() -> bool:
        kids = children(api, run_id)
        return bool(kids) and api.node(api.run(kids[0]["run_id"]), "slow")["status"] == "running"

    wait_for(child_running, timeout_s=60)
    assert api.node(api.run(run_id), "sub")["status"] == "delegated"
    # When the worker process group is killed with SIGKILL and a new one starts
    worker.kill()
    start_worker()
    run = api.wait(run_id, timeout_s=90)
    # Then the parent succeeded once, with the child's outputs, from its one child
    assert run["status"] == "succeeded", run
    assert api.node(run, "sub")["output"] == {"slept": 3.0} and api.node(run, "sub")["attempts"] == 1
    [child] = children(api, run_id)
    child_run = api.run(child["run_id"])
    assert child_run["status"] == "succeeded"
    assert [e["error"]["kind"] for e in api.node(child_run, "slow")["attempt_errors"]] == ["crashed"]
    url = (settings.database_url or "").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        counts = conn.execute("SELECT type, count(*) FROM run_events WHERE run_id = %s AND node_id = 'sub' "
                              "GROUP BY type", (run_id,)).fetchall()
    assert dict(counts) == {"node.started": 1, "node.delegated": 1, "node.woken": 1, "node.resumed": 1,
                            "node.succeeded": 1}


def _sql(settings: Any, query: str, *params: Any) -> None:
    url = (settings.database_url or "").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        conn.execute(query, params)


def test_the_reconciler_wakes_a_parent_whose_child_ended_without_waking_it(
        api: ApiHelper, inline_worker: Any, settings: Any) -> None:
    # Given a parent waiting on a child, and the child ended by a statement that did not wake it
    # (what a child that ended before its parent was parked leaves)
    api.create_workflow(ASKING_LEAF, name="asking")
    run_id = api.submit(api.create_workflow(caller("asking"), name="top"), {"text": "x"})
    inline_worker.drain()
    [child] = children(api, run_id)
    _sql(settings, "UPDATE runs SET status = 'succeeded', outputs = '{\"text\": \"late\"}', finished_at = now() "
                   "WHERE id = %s", child["run_id"])
    assert api.node(api.run(run_id), "sub")["status"] == "delegated"
    # When the reconciler sweeps
    inline_worker.sweep()
    # Then the parent node finished with the child's outputs, and the run went on
    run = api.wait(run_id)
    assert run["status"] == "succeeded" and run["outputs"] == {"text": "[late]"}


def test_the_reconciler_cancels_the_children_of_an_attempt_that_is_over(
        api: ApiHelper, inline_worker: Any, settings: Any) -> None:
    # Given a live child whose parent node's attempt is over (its epoch moved on: a crash re-queued it)
    api.create_workflow(ASKING_LEAF, name="asking")
    run_id = api.submit(api.create_workflow(caller("asking"), name="top"), {"text": "x"})
    inline_worker.drain()
    [child] = children(api, run_id)
    _sql(settings, "UPDATE node_runs SET epoch = epoch + 1 WHERE run_id = %s AND node_id = 'sub'", run_id)
    _sql(settings, "UPDATE runs SET created_at = now() - interval '1 hour' WHERE id = %s", child["run_id"])
    # When the reconciler sweeps, the orphan is cancelled and decides nothing
    inline_worker.sweep()
    assert api.run(child["run_id"])["status"] == "cancelled"
    assert api.node(api.run(run_id), "sub")["status"] == "delegated"
