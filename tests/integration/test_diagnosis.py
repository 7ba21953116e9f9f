"""`GET /v1/runs/{id}/diagnosis` and `relayflow why`, each cause really produced: no worker
running, a retry waiting on a failing loopback server, a SIGKILLed worker's lease, a question,
a batch child blocked on a loopback server, a space at its cap, and predecessors."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from engine.db import get_engine
from engine.settings import Settings
from engine.store import Store
from tests.conftest import ROOT, ApiHelper, settings_env, wait_for

pytestmark = pytest.mark.integration

HEARTBEAT_S = 0.5  # a worker silent for 1.5 s looks dead


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings, with heartbeats fast enough to see a worker die within a test."""
    return settings.model_copy(update={"worker_heartbeat_s": HEARTBEAT_S})


class Loopback:
    """A loopback HTTP server: `/fail` answers 503, `/block` holds the request until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.hits: list[str] = []
        loopback = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                loopback.hits.append(self.path)
                if self.path.startswith("/fail"):
                    self._reply(503, b'{"error": "unavailable"}')
                    return
                loopback.release.wait(timeout=60)
                self._reply(200, b'{"ok": true}')

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    server = Loopback()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.httpd.shutdown()
    server.httpd.server_close()


def chain(url: str, **fetch: Any) -> dict[str, Any]:
    """fetch (an http node calling `url`) -> after."""
    return {"nodes": [{"id": "fetch", "type": "http", "config": {"url": url, "timeout_s": 60}, **fetch},
                      {"id": "after", "type": "template", "after": ["fetch"], "config": {"template": "done"}}],
            "outputs": {"text": "{{ after.text }}"}}


def diagnosis(api: ApiHelper, run_id: str) -> dict[str, Any]:
    response = api.client.get(f"/v1/runs/{run_id}/diagnosis")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def waits(found: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n for n in found["nodes"] if n["node_id"] == node_id)


def _sql(settings: Settings, query: str, *params: Any) -> list[tuple[Any, ...]]:
    url = (settings.database_url or "").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def _why(settings: Settings, url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**settings_env(settings), "RELAYFLOW_URL": url, "RELAYFLOW_TOKEN": token, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "api.cli", "why", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_with_no_worker_running_the_diagnosis_says_so_and_a_started_worker_runs_it(
        api: ApiHelper, start_worker: Any, settings: Settings, web_server: str, token: str) -> None:
    # Given a run submitted while no worker runs
    run_id = api.submit(api.create_workflow({"nodes": [
        {"id": "first", "type": "template", "config": {"template": "one"}},
        {"id": "second", "type": "template", "after": ["first"], "config": {"template": "two"}}]}))
    # When its diagnosis is asked
    found = diagnosis(api, run_id)
    # Then the first node waits for a worker, and says plainly that none consumes its queue
    first = waits(found, "first")
    assert first["waiting_for"] == "worker" and first["live_workers"] == 0, first
    assert f"NO live worker consumes queue {settings.queue_name}" in first["detail"]
    assert found["queue_workers"] == 0 and "No live worker" in found["summary"]
    # and the second waits for its predecessor, by name
    second = waits(found, "second")
    assert second["waiting_for"] == "predecessors" and second["predecessors"] == [
        {"node_id": "first", "status": "queued"}]
    # And `relayflow why` prints one line per node in plain words (exit 2: the run is live), or the JSON
    said = _why(settings, web_server, token, run_id)
    assert said.returncode == 2, said.stdout + said.stderr
    lines = said.stdout.splitlines()
    assert any(line.startswith("first (queued) waits for a worker") and "NO live worker consumes queue" in line
               for line in lines), said.stdout
    assert any(line.startswith("second (waiting) waits for predecessors") and "first (queued)" in line
               for line in lines), said.stdout
    as_json = _why(settings, web_server, token, run_id, "--json")
    assert json.loads(as_json.stdout)["nodes"][0]["waiting_for"] == "worker"
    # When a worker starts
    start_worker(processes=1, threads=2)
    # Then it registers, consumes the queue, and the run succeeds; its diagnosis then waits for nothing
    wait_for(lambda: diagnosis(api, run_id)["queue_workers"] == 1 or api.run(run_id)["status"] == "succeeded")
    assert api.wait(run_id, timeout_s=60)["status"] == "succeeded"
    ended = diagnosis(api, run_id)
    assert ended["nodes"] == [] and "ended succeeded" in ended["summary"]
    assert _why(settings, web_server, token, run_id).returncode == 0


def test_a_retry_waiting_names_its_due_time_error_and_attempt(api: ApiHelper, inline_worker: Any,
                                                                loopback: Loopback) -> None:
    # Given a node failing against a loopback server, with a long backoff between attempts
    retry = {"max_attempts": 3, "backoff_s": 60, "jitter": False}
    run_id = api.submit(api.create_workflow(chain(f"{loopback.url}/fail", retry=retry)))
    # When its first attempt has failed (one message run: the retry's is held for 60 s)
    assert inline_worker.run_next()
    assert loopback.hits == ["/fail"]
    found = waits(diagnosis(api, run_id), "fetch")
    # Then the diagnosis names the retry's due time, the error and the attempt to come
    assert found["status"] == "retrying" and found["waiting_for"] == "retry", found
    assert found["attempt"] == 2 and found["max_attempts"] == 3
    assert "HTTP 503" in found["detail"] and "attempt 2 of 3" in found["detail"]
    assert found["retry_at"] in found["detail"] and found["error"]["kind"] == "error"
    assert waits(diagnosis(api, run_id), "after")["predecessors"] == [{"node_id": "fetch", "status": "retrying"}]


def test_an_interrupt_waits_for_a_persons_answer_with_its_event(api: ApiHelper, inline_worker: Any) -> None:
    # Given a run that reached a question
    run_id = api.submit(api.create_workflow({"nodes": [
        {"id": "ask", "type": "question",
         "config": {"question": "Ship it?", "answer_type": "option", "options": ["yes", "no"]}}]}))
    run = api.wait(run_id, statuses=("interrupted",))
    # When its diagnosis is asked
    found = diagnosis(api, run_id)
    # Then the node waits for an answer since the question, with the event to answer
    ask = waits(found, "ask")
    assert ask["waiting_for"] == "answer" and ask["event_id"] == run["interrupt"]["event_id"], ask
    assert ask["interrupt_type"] == "question" and ask["since"] and "relayflow resume" in ask["detail"]
    assert found["status"] == "interrupted"


def test_a_running_node_names_its_live_worker_and_a_space_at_its_cap_waitlists_the_next(
        api: ApiHelper, start_worker: Any, settings: Settings, loopback: Loopback) -> None:
    # Given a space capped at one running node and a worker holding one node blocked on a loopback server
    Store.from_engine(get_engine(settings)).catalog.set_space_cap("default", 1)
    start_worker(processes=1, threads=2)
    workflow_id = api.create_workflow(chain(f"{loopback.url}/block"))
    first = api.submit(workflow_id)
    wait_for(lambda: api.node(api.run(first), "fetch")["status"] == "running")
    # When a second run's node is refused a slot
    second = api.submit(workflow_id)
    wait_for(lambda: _sql(settings, "SELECT count(*) FROM space_waiters WHERE run_id = %s", second)[0][0] == 1)
    # Then the run object names the worker holding the running node: a registered, live worker
    holder = api.node(api.run(first), "fetch")["worker"]
    registered = dict(_sql(settings, "SELECT id, heartbeat_at > now() - interval '1.5 seconds' FROM workers"))
    assert registered.get(holder) is True, (holder, registered)
    assert api.node(api.run(first), "after")["worker"] is None
    # and the diagnosis says the node runs on that live worker until its lease ends
    lease = waits(diagnosis(api, first), "fetch")
    assert lease["waiting_for"] == "lease" and lease["worker"] == holder and lease["worker_alive"] is True
    assert holder in lease["detail"] and "alive" in lease["detail"]
    # and the waitlisted node names its space's cap
    capped = waits(diagnosis(api, second), "fetch")
    assert capped["waiting_for"] == "space_cap", capped
    assert capped["space"] == {"space_id": "default", "max_running_nodes": 1, "running_nodes": 1}
    # When the blocked request is released, both runs end
    loopback.release.set()
    assert api.wait(first, timeout_s=60)["status"] == "succeeded"
    assert api.wait(second, timeout_s=60)["status"] == "succeeded"


def test_a_killed_workers_lease_names_the_dead_worker_its_expiry_and_the_reconcilers_next_action(
        api: ApiHelper, start_worker: Any, settings: Settings, loopback: Loopback) -> None:
    # Given a real worker running a node blocked on a loopback server
    worker = start_worker(processes=1, threads=2)
    run_id = api.submit(api.create_workflow(chain(f"{loopback.url}/block")))
    wait_for(lambda: api.node(api.run(run_id), "fetch")["status"] == "running")
    holder = api.node(api.run(run_id), "fetch")["worker"]
    assert holder and holder.split(":")[1].isdigit()
    # When the worker is killed with SIGKILL mid-node (no clean stop: its row stays, silent)
    worker.kill(signal.SIGKILL)
    found = wait_for(lambda: (f := waits(diagnosis(api, run_id), "fetch"))["worker_alive"] is False and f,
                     timeout_s=10)
    # Then the diagnosis names the dead worker, its lease's expiry, and what the reconciler will do then
    assert found["waiting_for"] == "lease" and found["worker"] == holder, found
    assert found["lease_expires_at"] and found["lease_expires_at"] in found["detail"]
    assert found["reconciler_action"] == f"re-queue it as crash 1 of {settings.max_crashes}"
    assert ("looks dead" in found["detail"] or "expired" in found["detail"]) and holder in found["detail"]
    # and, no worker being left, that nothing sweeps until one starts
    assert "no live worker runs the reconciler" in found["detail"]
    # When a new worker starts (and the server answers)
    loopback.release.set()
    start_worker(processes=1, threads=2)
    # Then its reconciler does what the diagnosis said: the node is re-queued as crash 1, and the run ends
    run = api.wait(run_id, timeout_s=60)
    assert run["status"] == "succeeded"
    assert [e["error"]["kind"] for e in api.node(run, "fetch")["attempt_errors"]] == ["crashed"]


def test_a_batch_waiting_for_a_blocked_child_shows_its_progress_and_the_live_child(
        api: ApiHelper, start_worker: Any, loopback: Loopback) -> None:
    # Given a batch of two items, one at a time, whose first item blocks on a loopback server
    body = [{"id": "fetch", "type": "http", "config": {"url": f"{loopback.url}/block?i={{{{ item }}}}",
                                                       "timeout_s": 60}}]
    run_id = api.submit(api.create_workflow({"nodes": [
        {"id": "each", "type": "batch",
         "config": {"items": [1, 2], "concurrency": 1, "nodes": body, "outputs": {"code": "{{ fetch.status_code }}"}}}],
        "outputs": {"codes": "{{ each.code }}"}}))
    start_worker(processes=1, threads=2)
    wait_for(lambda: len(loopback.hits) == 1)
    # When the parent run's diagnosis is asked
    found = waits(diagnosis(api, run_id), "each")
    # Then the batch node waits for its children: 0 of 2 ended, 1 started, the live child named
    assert found["waiting_for"] == "children", found
    children = found["children"]
    assert (children["done"], children["total"], children["started"]) == (0, 2, 1)
    child = children["live"][0]
    assert child["item_index"] == 0 and child["run_id"] in found["detail"]
    # and the child's own diagnosis says its node runs on a live worker
    assert waits(diagnosis(api, child["run_id"]), "fetch")["waiting_for"] == "lease"
    loopback.release.set()
    assert api.wait(run_id, timeout_s=60)["status"] == "succeeded"


def test_a_worker_stopped_cleanly_leaves_the_registry(api: ApiHelper, start_worker: Any, settings: Settings) -> None:
    # Given a registered worker process
    worker = start_worker(processes=1, threads=1)
    wait_for(lambda: _sql(settings, "SELECT count(*) FROM workers")[0][0] == 1)
    [(host, pid, queues)] = _sql(settings, "SELECT host, pid, queues FROM workers")
    assert queues == [settings.queue_name] and pid > 0 and host
    # When it stops cleanly (SIGTERM)
    worker.kill(signal.SIGTERM)
    # Then its row is gone: no stale worker is reported
    assert _sql(settings, "SELECT count(*) FROM workers")[0][0] == 0


def test_another_spaces_run_has_no_diagnosis(api: ApiHelper, settings: Settings) -> None:
    # Given a run moved to another space (the client's token is the default space's)
    run_id = api.submit(api.create_workflow({"nodes": [{"id": "t", "type": "template", "config": {"template": "x"}}]}))
    _sql(settings, "INSERT INTO spaces (id, name) VALUES ('other', 'other') ON CONFLICT DO NOTHING")
    _sql(settings, "UPDATE runs SET space_id = 'other' WHERE id = %s", run_id)
    # Then its diagnosis is not found, like the run itself
    assert api.client.get(f"/v1/runs/{run_id}/diagnosis").status_code == 404
    assert api.client.get(f"/v1/runs/{run_id}").status_code == 404
    assert api.client.get("/v1/runs/not-a-run/diagnosis").status_code == 404


def test_the_diagnosis_is_documented_in_the_openapi_document(client: Any) -> None:
    document = client.get("/openapi.json").get_json()
    route = document["paths"]["/v1/runs/{run_id}/diagnosis"]["get"]
    assert "DiagnosisOut" in json.dumps(route["responses"]["200"])
    node = document["components"]["schemas"]["DiagnosisNode"]
    assert set(node["properties"]["waiting_for"]["enum"]) == {
        "predecessors", "worker", "retry", "lease", "answer", "children", "space_cap", "deadline"}
    assert "worker" in document["components"]["schemas"]["NodeOut"]["properties"]
