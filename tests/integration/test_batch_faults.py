"""The `batch` node on real worker processes: kill -9 of the worker group mid-batch, duplicate
deliveries of child and parent messages, a parent retry after a failed item, and a few hundred
items at once.

The body's first node is an `http` node calling a loopback server started here, which counts the
calls per item: that count is the body's side effect, so "ran once" and "ran twice" are measured
outside the engine, not read back from its own records.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from engine.dispatch import DramatiqDispatcher, make_broker
from engine.settings import Settings
from tests.conftest import ApiHelper, wait_for

pytestmark = pytest.mark.integration


class ItemServer:
    """A loopback HTTP server that counts calls per item (`?i=N`), sleeps a little per call, and
    answers 500 to the first call of the items in `fail_first`."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls: Counter[int] = Counter()
        self.fail_first: set[int] = set()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                item = int(parse_qs(urlsplit(self.path).query)["i"][0])
                with server.lock:
                    server.calls[item] += 1
                    call = server.calls[item]
                time.sleep(server.delay_s)
                status = 500 if item in server.fail_first and call == 1 else 200
                payload = b'{"item": %d, "call": %d}' % (item, call)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the caller was killed mid-request
                    pass

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def snapshot(self) -> Counter[int]:
        with self.lock:
            return Counter(self.calls)


@pytest.fixture
def item_server() -> Iterator[ItemServer]:
    server = ItemServer(delay_s=0.3)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def fetching_batch(concurrency: int, **node: Any) -> dict[str, Any]:
    """A batch whose two-node body calls the item server (no retry: a failure fails the item),
    then labels the answer."""
    body = [{"id": "fetch", "type": "http", "config": {"url": "{{ inputs.base }}?i={{ item }}", "timeout_s": 20}},
            {"id": "label", "type": "template", "config": {"template": "{{ index }}:{{ fetch.json.item }}"}}]
    return {"inputs": {"items": {"type": "array", "required": True}, "base": {"type": "string", "required": True}},
            "nodes": [{"id": "each", "type": "batch", "inputs": {"base": "{{ inputs.base }}"},
                       "config": {"items": "{{ inputs.items }}", "concurrency": concurrency, "nodes": body,
                                  "outputs": {"label": "{{ label.text }}"}}, **node}],
            "outputs": {"labels": "{{ each.label }}"}}


def _sql(settings: Settings, query: str, *params: Any) -> list[tuple[Any, ...]]:
    url = (settings.database_url or "").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def _parent_events(settings: Settings, run_id: str) -> dict[str, int]:
    return dict(_sql(settings, "SELECT type, count(*) FROM run_events WHERE run_id = %s AND node_id = 'each' "
                               "GROUP BY type", run_id))


def _child_events(settings: Settings, run_id: str) -> dict[tuple[int, int, str | None, str], int]:
    """(epoch, item, node, event type) → count, over every child run of the run."""
    rows = _sql(settings, "SELECT r.parent_epoch, r.item_index, e.node_id, e.type, count(*) FROM run_events e "
                          "JOIN runs r ON r.id = e.run_id WHERE r.parent_run_id = %s GROUP BY 1, 2, 3, 4", run_id)
    return {(epoch, item, node, kind): n for epoch, item, node, kind, n in rows}


def _fetch_status(settings: Settings, run_id: str) -> dict[int, tuple[str, int]]:
    """item → (status, attempts) of each child's `fetch` node."""
    rows = _sql(settings, "SELECT r.item_index, n.status, n.attempts FROM runs r JOIN node_runs n ON n.run_id = r.id "
                          "WHERE r.parent_run_id = %s AND n.node_id = 'fetch'", run_id)
    return {item: (status, attempts) for item, status, attempts in rows}


def test_kill_9_mid_batch_reruns_only_the_items_in_flight_and_the_batch_succeeds_once(
        api: ApiHelper, start_worker: Any, settings: Settings, item_server: ItemServer) -> None:
    # Given a batch of 60 items, 10 at a time, on a real worker group, its items calling the server
    items = list(range(60))
    worker = start_worker(processes=2, threads=8)
    run_id = api.submit(api.create_workflow(fetching_batch(10)), {"items": items, "base": item_server.url})
    # When the worker group is killed with SIGKILL once about a third of the items have called
    wait_for(lambda: len(item_server.snapshot()) >= 20, timeout_s=60)
    worker.kill()
    # A statement a killed worker had already sent still commits in Postgres: let those land
    # before reading what was committed
    time.sleep(1.0)
    called = item_server.snapshot()  # no worker is left to call after this point
    fetched = {i for i, (status, _) in _fetch_status(settings, run_id).items() if status == "succeeded"}
    finished = {r[0] for r in _sql(settings, "SELECT item_index FROM runs WHERE parent_run_id = %s "
                                             "AND status = 'succeeded'", run_id)}
    in_flight = set(called) - fetched  # called the server, but the call's node never committed
    assert in_flight, "the kill should land while items are in flight"
    assert len(called) < len(items), "the kill should land in the middle of the batch"
    assert all(n == 1 for n in called.values())
    # And a new worker group starts (its reconciler recovers the expired leases)
    start_worker(processes=2, threads=8)
    run = api.wait(run_id, timeout_s=120)
    # Then the batch succeeded with every item's output, in item order
    assert run["status"] == "succeeded", run
    assert run["outputs"]["labels"] == [f"{i}:{i}" for i in items]
    each = api.node(run, "each")
    assert each["attempts"] == 1 and each["progress"] == {"done": 60, "total": 60, "started": 60}
    # And the body's side effect ran once per item, twice only for the items in flight at the kill
    calls = item_server.snapshot()
    assert set(calls) == set(items)
    assert {i for i, n in calls.items() if n == 2} <= in_flight, (calls, in_flight)
    assert {i for i, n in calls.items() if n > 2} == set()
    assert all(calls[i] == 2 for i in in_flight), (calls, in_flight)  # their node crashed, so it ran again
    # And no item that had finished (or had its call committed) ran anything again
    statuses = _fetch_status(settings, run_id)
    assert all(statuses[i] == ("succeeded", 1) for i in fetched | finished)
    assert all(statuses[i] == ("succeeded", 2) for i in in_flight)
    # And each item's outputs were committed once: one child per item, each node and run succeeded once
    events = _child_events(settings, run_id)
    assert sorted(r[0] for r in _sql(settings, "SELECT item_index FROM runs WHERE parent_run_id = %s", run_id)) == items
    for i in items:
        assert events[(1, i, None, "run.succeeded")] == 1
        assert events[(1, i, "fetch", "node.succeeded")] == 1 and events[(1, i, "label", "node.succeeded")] == 1
    # And the batch node succeeded once, counted each item's end once, woke once
    assert _parent_events(settings, run_id) == {"node.started": 1, "node.delegated": 1, "node.progress": 59,
                                                "node.woken": 1, "node.resumed": 1, "node.succeeded": 1}


def test_duplicate_child_and_parent_messages_change_nothing(api: ApiHelper, start_worker: Any, settings: Settings,
                                                            item_server: ItemServer) -> None:
    # Given a batch of 40 items, 5 at a time, on a real worker group
    items = list(range(40))
    start_worker(processes=2, threads=8)
    run_id = api.submit(api.create_workflow(fetching_batch(5)), {"items": items, "base": item_server.url})
    dispatcher = DramatiqDispatcher(make_broker(settings), settings.queue_name)

    def every_child() -> list[tuple[str, int]]:
        return [(str(r[0]), r[1]) for r in _sql(settings, "SELECT id, item_index FROM runs WHERE parent_run_id = %s",
                                                run_id)]

    # When, all through the batch, the parent's message and every child's root and second node
    # are delivered again (children that finished, run now, or have not started yet)
    sent = 0
    while api.run(run_id)["status"] not in ("succeeded", "failed"):
        dispatcher.send(run_id, "each")
        for child, _ in every_child():
            dispatcher.send(child, "fetch")
            dispatcher.send(child, "label")
            sent += 2
        time.sleep(0.2)
    run = api.wait(run_id, timeout_s=60)
    assert sent > len(items) * 4, "duplicates should have been sent at several points of the batch"
    # Then the batch ran as without them: outputs, one call per item, events per node as a clean run
    assert run["status"] == "succeeded", run
    assert run["outputs"]["labels"] == [f"{i}:{i}" for i in items]
    assert item_server.snapshot() == Counter(dict.fromkeys(items, 1))
    clean_parent = {"node.started": 1, "node.delegated": 1, "node.progress": 39, "node.woken": 1,
                    "node.resumed": 1, "node.succeeded": 1}
    assert _parent_events(settings, run_id) == clean_parent
    events = _child_events(settings, run_id)
    clean_child = {(None, "run.queued"): 1, (None, "run.started"): 1, (None, "run.succeeded"): 1,
                   ("fetch", "node.started"): 1, ("fetch", "node.succeeded"): 1,
                   ("label", "node.started"): 1, ("label", "node.succeeded"): 1}
    for i in items:
        assert {(node, kind): n for (_, item, node, kind), n in events.items() if item == i} == clean_child, i
    # And once it finished, another copy of every message changes nothing either
    before = (api.run(run_id), _parent_events(settings, run_id), _child_events(settings, run_id))
    dispatcher.send(run_id, "each")
    for child, _ in every_child():
        dispatcher.send(child, "fetch")
        dispatcher.send(child, "label")
    wait_for(lambda: dispatcher.broker.client.llen(f"dramatiq:{settings.queue_name}") == 0)  # type: ignore[attr-defined]
    time.sleep(1.0)
    assert (api.run(run_id), _parent_events(settings, run_id), _child_events(settings, run_id)) == before
    assert item_server.snapshot() == Counter(dict.fromkeys(items, 1))


def test_a_batch_retried_after_a_failed_item_starts_new_items_and_succeeds(
        api: ApiHelper, start_worker: Any, settings: Settings, item_server: ItemServer) -> None:
    # Given a batch that may retry once, whose item 7 fails on its first call only
    items = list(range(20))
    item_server.fail_first = {7}
    start_worker(processes=2, threads=8)
    definition = fetching_batch(4, retry={"max_attempts": 2, "backoff_s": 0.1, "jitter": False})
    run_id = api.submit(api.create_workflow(definition), {"items": items, "base": item_server.url})
    # When it runs
    run = api.wait(run_id, timeout_s=90)
    # Then the first attempt failed at item 7, the retry ran a new child per item, and it succeeded
    assert run["status"] == "succeeded", run
    assert run["outputs"]["labels"] == [f"{i}:{i}" for i in items]
    each = api.node(run, "each")
    assert each["attempts"] == 2
    assert "item 7" in each["attempt_errors"][0]["error"]["message"]
    rows = _sql(settings, "SELECT parent_epoch, status, count(*) FROM runs WHERE parent_run_id = %s "
                          "GROUP BY 1, 2", run_id)
    by_epoch: dict[int, dict[str, int]] = {}
    for epoch, status, n in rows:
        by_epoch.setdefault(epoch, {})[status] = n
    first, second = sorted(by_epoch)
    assert by_epoch[first]["failed"] == 1 and "running" not in by_epoch[first] and "queued" not in by_epoch[first]
    assert by_epoch[second] == {"succeeded": 20}
    # And the outputs are the second attempt's: one succeeded child per item of that attempt
    assert _parent_events(settings, run_id)["node.succeeded"] == 1


def test_a_few_hundred_items_on_real_workers_come_back_in_item_order(
        api: ApiHelper, start_worker: Any, settings: Settings) -> None:
    # Given a batch of 300 items of a two-node body, 50 at a time
    body = [{"id": "double", "type": "template", "config": {"template": "{{ item * 2 }}"}},
            {"id": "label", "type": "template", "config": {"template": "{{ index }}={{ double.text }}"}}]
    definition = {"inputs": {"items": {"type": "array", "required": True}},
                  "nodes": [{"id": "each", "type": "batch",
                             "config": {"items": "{{ inputs.items }}", "concurrency": 50, "nodes": body,
                                        "outputs": {"label": "{{ label.text }}"}}}],
                  "outputs": {"labels": "{{ each.label }}"}}
    start_worker(processes=2, threads=8)
    items = list(range(300))
    # When it runs
    run = api.wait(api.submit(api.create_workflow(definition), {"items": items}), timeout_s=180)
    # Then every item's output is there, in item order, and the batch node counted each end once
    assert run["status"] == "succeeded", run
    assert run["outputs"]["labels"] == [f"{i}={i * 2}" for i in items]
    assert api.node(run, "each")["progress"] == {"done": 300, "total": 300, "started": 300}
    assert _parent_events(settings, run["run_id"])["node.progress"] == 299
