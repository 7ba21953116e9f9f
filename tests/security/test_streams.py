"""Event streams cannot exhaust the web server, one token cannot hold unbounded streams, and a
revoked or expired token's open streams close (issue 9, items 6 and 8).

Every attack runs for real: raw sockets hold hundreds of `GET /v1/runs/{id}/events` streams
open against a real gunicorn (as `relayflow up` starts it) with a real worker behind it.
"""
from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis as redis_lib

from engine.db import get_engine
from engine.errors import TooManyStreams
from engine.settings import Settings
from engine.store import Store
from engine.streams import LIMIT_SETTING, StreamRegistry
from engine.tokens import issue_token
from tests.conftest import ApiHelper, WebProcess, wait_for

pytestmark = pytest.mark.integration

CAP = 40  # RELAYFLOW_MAX_STREAMS_PER_TOKEN for these servers
OLD_THREADS = 2 * 64  # what gthread (2 processes x 64 threads) could hold, streams and requests together
ASK = {"nodes": [{"id": "ask", "type": "question", "config": {"question": "Go on?", "answer_type": "text"}},
                 {"id": "echo", "type": "template", "after": ["ask"], "config": {"template": "{{ ask.answer }}"}}],
       "outputs": {"answer": "{{ echo.text }}"}}
QUICK = {"nodes": [{"id": "hi", "type": "template", "config": {"template": "hi"}}], "outputs": {"text": "{{ hi.text }}"}}


@pytest.fixture
def stream_server(start_web: Callable[..., WebProcess]) -> str:
    """A real gunicorn with a small per-token cap and a 1 s token re-check; its URL."""
    return start_web({"RELAYFLOW_MAX_STREAMS_PER_TOKEN": str(CAP), "RELAYFLOW_STREAM_RECHECK_S": "1"}, workers=2).url


class RawStream:
    """One HTTP request on its own socket, its response read as it comes (no client library limits)."""

    def __init__(self, base: str, path: str, token: str, body: dict[str, Any] | None = None) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        payload = json.dumps(body).encode() if body is not None else b""
        head = (f"{'POST' if body is not None else 'GET'} {path} HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\nConnection: close\r\n")
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + payload)
        self.data = b""
        self.status = 0

    def read_status(self) -> int:
        """Read up to the end of the response headers; the HTTP status."""
        while b"\r\n\r\n" not in self.data:
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed before the headers: {self.data!r}"
            self.data += chunk
        self.status = int(self.data.split(b" ", 2)[1])
        return self.status

    def read_until(self, needle: bytes, timeout_s: float) -> bool:
        """Read until `needle` arrives (True) or the server closes or `timeout_s` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while needle not in self.data:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return False
            if not chunk:
                return False
            self.data += chunk
        return True

    def closed_within(self, timeout_s: float) -> float | None:
        """Seconds until the server closed the stream, or None if it stayed open for `timeout_s`."""
        started = time.monotonic()
        self.sock.settimeout(timeout_s)
        try:
            while chunk := self.sock.recv(65536):
                self.data += chunk
                self.sock.settimeout(max(0.01, timeout_s - (time.monotonic() - started)))
        except TimeoutError:
            return None
        return time.monotonic() - started

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def streams() -> Iterator[Callable[..., RawStream]]:
    """Open raw streams; all are closed at teardown."""
    opened: list[RawStream] = []

    def open_stream(*args: Any, **kwargs: Any) -> RawStream:
        opened.append(RawStream(*args, **kwargs))
        return opened[-1]

    yield open_stream
    for stream in opened:
        stream.close()


def _tokens(settings: Settings, count: int, scopes: tuple[str, ...] = ("run",)) -> list[str]:
    store = Store.from_engine(get_engine(settings))
    return [issue_token(store, "default", f"reader {i}", scopes).token for i in range(count)]


def _interrupted_runs(api: ApiHelper, count: int) -> list[str]:
    workflow_id = api.create_workflow(ASK)
    run_ids = [api.submit(workflow_id) for _ in range(count)]
    for run_id in run_ids:
        api.wait(run_id, statuses=("interrupted",))
    return run_ids


def test_polls_and_submits_answer_with_300_streams_open(stream_server: str, settings: Settings, api: ApiHelper,
                                                        token: str, start_worker: Any,
                                                        streams: Callable[..., RawStream]) -> None:
    # Given runs waiting for a person (their streams stay open) and eight read-only tokens
    start_worker(processes=1, threads=4)
    run_ids = _interrupted_runs(api, 5)
    readers = _tokens(settings, 8)
    # When 300 streams are opened: more than the old server's 128 threads
    opened = [streams(stream_server, f"/v1/runs/{run_ids[i % 5]}/events", readers[i % 8]) for i in range(300)]
    assert len(opened) > OLD_THREADS
    assert all(s.read_status() == 200 for s in opened)
    assert all(s.read_until(b"run.interrupted", 30) for s in opened)
    # Then polls and submits still answer while every stream stays open
    headers = {"Authorization": f"Bearer {token}"}
    quick = api.create_workflow(QUICK)
    with httpx.Client(base_url=stream_server, headers=headers, timeout=20) as http:
        polls = []
        for run_id in run_ids * 4:
            started = time.monotonic()
            answer = http.get(f"/v1/runs/{run_id}")
            polls.append(time.monotonic() - started)
            assert answer.status_code == 200 and answer.json()["status"] == "interrupted"
        submitted = http.post(f"/v1/workflows/{quick}/runs", json={"mode": "sync", "wait_s": 20})
        assert submitted.status_code == 200, submitted.text
        assert submitted.json()["outputs"] == {"text": "hi"}
        # and the streams are live: answering one run reaches the 60 streams following it
        resumed = http.post(f"/v1/runs/{run_ids[0]}/resume",
                            json={"event_id": http.get(f"/v1/runs/{run_ids[0]}").json()["interrupt"]["event_id"],
                                  "data": "yes"})
        assert resumed.status_code == 202, resumed.text
    following = [s for i, s in enumerate(opened) if i % 5 == 0]
    assert all(s.read_until(b"event: run.succeeded", 30) for s in following)
    print(f"300 streams open: 20 polls, slowest {max(polls) * 1000:.0f} ms")


def test_one_token_cannot_hold_more_streams_than_the_cap(stream_server: str, settings: Settings, api: ApiHelper,
                                                         token: str, streams: Callable[..., RawStream]) -> None:
    # Given a queued run (no worker: it stays open) and a read-only token holding CAP streams
    run_id = api.submit(api.create_workflow(QUICK))
    reader, other = _tokens(settings, 2)
    held = [streams(stream_server, f"/v1/runs/{run_id}/events", reader) for _ in range(CAP)]
    assert all(s.read_status() == 200 for s in held)
    # When it opens one more
    answer = httpx.get(f"{stream_server}/v1/runs/{run_id}/events", headers={"Authorization": f"Bearer {reader}"},
                       timeout=20)
    # Then it is refused with 429 naming the limit and its setting
    assert answer.status_code == 429
    body = answer.json()
    assert body["code"] == 4290 and body["limit"] == CAP and body["setting"] == LIMIT_SETTING
    assert f"{CAP} open event streams" in body["msg"] and f"{LIMIT_SETTING}={CAP}" in body["msg"]
    # and another token is not affected
    assert streams(stream_server, f"/v1/runs/{run_id}/events", other).read_status() == 200
    # and closing a stream frees its slot (the server notices at its next keep-alive)
    held.pop().close()
    wait_for(lambda: streams(stream_server, f"/v1/runs/{run_id}/events", reader).read_status() == 200,
             timeout_s=20, interval_s=0.5)


def test_the_cap_covers_coze_streams_and_starts_no_run(stream_server: str, settings: Settings, api: ApiHelper,
                                                       streams: Callable[..., RawStream]) -> None:
    # Given a token already holding CAP streams
    run_id = api.submit(api.create_workflow(QUICK))
    workflow_id = api.create_workflow(QUICK, name="published")
    assert api.client.post(f"/v1/workflows/{workflow_id}/publish", json={}).status_code == 200
    (reader,) = _tokens(settings, 1)
    held = [streams(stream_server, f"/v1/runs/{run_id}/events", reader) for _ in range(CAP)]
    assert all(s.read_status() == 200 for s in held)
    runs_before = len(api.client.get("/v1/runs").get_json()["runs"])
    # When it asks Coze's stream_run for one more
    answer = httpx.post(f"{stream_server}/v1/workflow/stream_run", headers={"Authorization": f"Bearer {reader}"},
                        json={"workflow_id": workflow_id, "parameters": {}}, timeout=20)
    # Then the answer is Coze's {code, msg} error with 429, and no run was started
    assert answer.status_code == 429
    assert answer.json()["code"] == 4290 and LIMIT_SETTING in answer.json()["msg"]
    assert len(api.client.get("/v1/runs").get_json()["runs"]) == runs_before


def test_a_revoked_tokens_open_streams_close_within_seconds(stream_server: str, settings: Settings, api: ApiHelper,
                                                             token: str, streams: Callable[..., RawStream]) -> None:
    # Given a run token, created by the space's admin, following a run natively and through Coze
    run_id = api.submit(api.create_workflow(QUICK))
    workflow_id = api.create_workflow(QUICK, name="published")
    assert api.client.post(f"/v1/workflows/{workflow_id}/publish", json={}).status_code == 200
    created = api.client.post("/v1/tokens", json={"name": "leaked", "scopes": ["run"]}).get_json()
    native = streams(stream_server, f"/v1/runs/{run_id}/events", created["token"])
    coze = streams(stream_server, "/v1/workflow/stream_run", created["token"],
                   body={"workflow_id": workflow_id, "parameters": {}})
    assert native.read_status() == 200
    assert native.closed_within(2.5) is None  # open and quiet (no worker runs it)
    assert coze.closed_within(0.5) is None  # Coze streams send nothing (not even headers) before an event
    # When the admin revokes the token
    assert api.client.post(f"/v1/tokens/{created['token_id']}/revoke").status_code == 200
    # Then both streams end within seconds: the native one simply closes (a reconnect gets the
    # 401), the Coze one with an Error event saying why
    assert (native_s := native.closed_within(15)) is not None
    assert coze.read_status() == 200
    assert (coze_s := coze.closed_within(15)) is not None
    assert b"event: Error" in coze.data and b"revoked" in coze.data
    error = json.loads(coze.data.split(b"event: Error\ndata: ", 1)[1].split(b"\n", 1)[0])
    assert error["error_code"] == 4010 and error["error_message"].startswith("Stream closed: This token was revoked")
    again = httpx.get(f"{stream_server}/v1/runs/{run_id}/events", timeout=10,
                      headers={"Authorization": f"Bearer {created['token']}", "Last-Event-ID": "1"})
    assert again.status_code == 401 and "revoked" in again.json()["msg"]
    print(f"revoked: native stream closed after {native_s:.1f} s, Coze stream after {coze_s:.1f} s")


def test_an_expired_tokens_open_stream_closes(stream_server: str, settings: Settings, api: ApiHelper,
                                              streams: Callable[..., RawStream]) -> None:
    # Given a token that expires in 15 s (a loaded machine may take seconds to serve a first
    # request), following a run
    run_id = api.submit(api.create_workflow(QUICK))
    store = Store.from_engine(get_engine(settings))
    short = issue_token(store, "default", "short", ("run",), timedelta(seconds=15))
    stream = streams(stream_server, f"/v1/runs/{run_id}/events", short.token)
    assert stream.read_status() == 200, stream.data
    # Then its stream ends soon after it expires
    assert stream.closed_within(60) is not None
    assert datetime.now(UTC) >= short.expires_at  # not before


def test_a_dead_web_process_slots_lapse(settings: Settings) -> None:
    # Given a process that took a token's only slot and died without freeing it (never renews)
    client = redis_lib.Redis.from_url(settings.redis_url or "")
    store = Store.from_engine(get_engine(settings))
    # (a 3 s expiry renewed every second: a loaded machine, CI's, stalled a renewal of a 1.5 s
    # expiry past it once, so its database re-check before the renewal may take two seconds here)
    dead = StreamRegistry(store, client, settings.queue_name, limit=1, recheck_s=0.1, slot_ttl_s=3.0)
    alive = StreamRegistry(store, client, settings.queue_name, limit=1, recheck_s=0.1, slot_ttl_s=3.0)
    dead.open(7)
    # Then another process is refused at first, and gets the slot once it lapsed
    with pytest.raises(TooManyStreams):
        alive.open(7)
    time.sleep(3.2)
    lease = alive.open(7)
    # and a live process's renewals keep its slot past the expiry
    for _ in range(40):
        time.sleep(0.1)
        alive.tick()
    assert alive.count(7) == 1
    with pytest.raises(TooManyStreams):
        dead.open(7)
    lease.release()
    assert alive.count(7) == 0
    client.close()


def test_the_gevent_web_server_serves_the_other_routes(stream_server: str, token: str, start_worker: Any) -> None:
    # Given the web process on gevent (monkey-patched: psycopg, redis-py, LiteLLM's imports)
    start_worker(processes=1, threads=2)
    with httpx.Client(base_url=stream_server, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        # Then health, the OpenAPI document, the model registry, tokens and every run route answer
        assert http.get("/healthz").status_code == 200
        assert http.get("/openapi.json").json()["openapi"].startswith("3.")
        assert http.get("/v1/models").status_code == 200
        assert http.post("/v1/models/refresh").status_code in (200, 403)
        assert http.get("/v1/tokens").status_code == 200
        workflow_id = http.post("/v1/workflows", json={"name": "q", "definition": QUICK}).json()["workflow_id"]
        done = http.post(f"/v1/workflows/{workflow_id}/runs", json={"mode": "sync", "wait_s": 20})
        assert done.status_code == 200 and done.json()["outputs"] == {"text": "hi"}
        assert http.get("/v1/runs", params={"workflow_id": workflow_id}).json()["runs"][0]["run_id"] == done.json()["run_id"]
        ask = http.post("/v1/workflows", json={"name": "a", "definition": ASK}).json()["workflow_id"]
        waiting = http.post(f"/v1/workflows/{ask}/runs", json={"mode": "sync", "wait_s": 20}).json()
        assert waiting["status"] == "interrupted"
        assert http.post(f"/v1/runs/{waiting['run_id']}/cancel").status_code == 202
