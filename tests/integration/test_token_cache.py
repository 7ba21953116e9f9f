"""The web processes' token cache (engine/token_cache.py): a revoked token stops working in EVERY
gunicorn process within a second of its revocation, through the Redis announcement and without
it (Redis killed, then restarted); expiry stays exact.

Each client connection is a keep-alive `http.client` connection whose serving gunicorn process is
found through /proc (the server-side socket's inode among that process's descriptors), so the
tests know both processes answered before and refused after.
"""
from __future__ import annotations

import http.client
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from engine.db import get_engine
from engine.settings import Settings
from engine.store import Store
from engine.tokens import issue_token
from tests.conftest import WebProcess, free_port, wait_for

BOUND_S = 1.0  # the issue's promise: a revoked token never works longer than this
QUIET = {"RELAYFLOW_AUTH_FAILURE_LIMIT": "100000",  # the refusals below must stay 401s, not 429s
         # the kept-alive connections stay open while idle (gunicorn closes them after 2 s by
         # default, which a loaded machine's pause between opening and hammering them can pass)
         "GUNICORN_CMD_ARGS": "--keep-alive 300"}


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store.from_engine(get_engine(settings))


def _worker_pids(master: int) -> set[int]:
    """gunicorn's worker processes: the children of its master."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == master:
                found.add(int(entry.name))
    return found


def _serving_pid(server_port: int, client_port: int, pids: set[int]) -> int | None:
    """The process holding the server side of the loopback connection from `client_port`."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == server_port and int(fields[2].split(":")[1], 16) == client_port:
            inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
        except OSError:
            continue
    return None


_OPEN: list[http.client.HTTPConnection] = []


@pytest.fixture(autouse=True)
def _close_connections() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


class Conn:
    """One keep-alive connection with a bearer token, and the gunicorn process that serves it."""

    def __init__(self, web: WebProcess, token: str) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", web.port, timeout=60)  # a first request loads the app
        _OPEN.append(self.http)
        self.headers = {"Authorization": f"Bearer {token}"}
        status = self.get()
        assert status == 200, self.body
        self.pid = _serving_pid(web.port, self.http.sock.getsockname()[1], _worker_pids(web.proc.pid))

    def get(self, path: str = "/v1/workflows") -> int:
        self.http.request("GET", path, headers=self.headers)
        response = self.http.getresponse()
        self.body = response.read()
        return response.status


def _connections(web: WebProcess, token: str, per_process: int = 4) -> list[Conn]:
    """Keep-alive connections, at least `per_process` served by each of the 2 gunicorn processes."""
    by_pid: dict[int, list[Conn]] = {}
    for _ in range(200):
        conn = Conn(web, token)
        if conn.pid is not None and len(by_pid.setdefault(conn.pid, [])) < per_process:
            by_pid[conn.pid].append(conn)
        else:
            conn.http.close()
        if len(by_pid) == 2 and all(len(c) == per_process for c in by_pid.values()):
            return [c for conns in by_pid.values() for c in conns]
        time.sleep(0.01)  # the idle process wins the next accept
    raise AssertionError(f"connections did not reach both processes: {by_pid}")


def _last_accepted_after(conns: list[Conn], revoke: Callable[[], None]) -> tuple[float, dict[int, float]]:
    """Hammer every connection, revoke, and return how long after the revocation began the last
    request that was still accepted was sent: overall, and per serving process."""
    stop = threading.Event()
    last_ok: dict[int, float] = {}
    refused: dict[int, float] = {}

    def hammer(i: int, conn: Conn) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            status = conn.get()
            if status == 200:
                last_ok[i] = sent
            else:
                assert status == 401, status
                refused[i] = sent
                return

    threads = [threading.Thread(target=hammer, args=(i, c), daemon=True) for i, c in enumerate(conns)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(last_ok) == len(conns), timeout_s=30.0)  # every connection works before
        assert not refused
        began = time.monotonic()
        revoke()
        wait_for(lambda: len(refused) == len(conns), timeout_s=10.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15.0)
    delays = {i: last_ok[i] - began for i in range(len(conns))}
    per_pid: dict[int, float] = {}
    for i, conn in enumerate(conns):
        assert conn.pid is not None
        per_pid[conn.pid] = max(per_pid.get(conn.pid, -1.0), delays[i])
    return max(delays.values()), per_pid


def test_a_token_revoked_through_the_api_is_refused_by_every_web_process_within_a_second(
        start_web: Callable[..., WebProcess], store: Store) -> None:
    # Given gunicorn with 2 processes, and a token both have served (and cached)
    web = start_web(QUIET, workers=2)
    admin = issue_token(store, "acme", "admin", ("admin",), create_space=True)
    victim = issue_token(store, "acme", "ci", ("run",))
    conns = _connections(web, victim.token)
    admin_conn = Conn(web, admin.token)

    def revoke() -> None:
        admin_conn.http.request("POST", f"/v1/tokens/{victim.token_id}/revoke", headers=admin_conn.headers)
        answer = admin_conn.http.getresponse()
        answer.read()
        assert answer.status == 200

    # When the token is revoked through the API while every connection keeps using it
    worst, per_pid = _last_accepted_after(conns, revoke)
    # Then no request sent more than a second after the revocation was accepted, in either process
    print(f"last accepted request after the API revocation: {worst * 1000:.1f} ms; per process {per_pid}")
    assert len(per_pid) == 2 and worst < BOUND_S


def test_without_redis_or_after_its_restart_a_revoked_token_is_still_refused_within_a_second(
        start_web: Callable[..., WebProcess], store: Store, tmp_path: Path) -> None:
    # Given gunicorn with 2 processes on a Redis of its own, and two tokens both processes cached
    redis_port = free_port()
    redis_cmd = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(tmp_path)]
    own_redis = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: _port_open(redis_port), timeout_s=10.0)
        web = start_web(QUIET | {"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}, workers=2)
        admin = issue_token(store, "acme", "admin", ("admin",), create_space=True)
        first = issue_token(store, "acme", "first", ("run",))
        second = issue_token(store, "acme", "second", ("run",))
        first_conns = _connections(web, first.token)

        # When Redis dies (no announcement can reach anyone) and a token is revoked in the database
        own_redis.kill()
        own_redis.wait()
        worst, per_pid = _last_accepted_after(first_conns, lambda: store.catalog.revoke_token(first.token_id, None))
        # Then both processes still refuse it within the bound
        print(f"Redis down: last accepted request {worst * 1000:.1f} ms after the revocation; per process {per_pid}")
        assert len(per_pid) == 2 and worst < BOUND_S

        # When Redis comes back (empty: a restart), both processes serve (and cache) the other token,
        # and it is revoked through the API
        own_redis = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: _port_open(redis_port), timeout_s=10.0)
        second_conns = _connections(web, second.token)  # fresh ones: idle keep-alive connections close
        admin_conn = Conn(web, admin.token)

        def revoke() -> None:
            admin_conn.http.request("POST", f"/v1/tokens/{second.token_id}/revoke", headers=admin_conn.headers)
            answer = admin_conn.http.getresponse()
            answer.read()
            assert answer.status == 200

        worst, per_pid = _last_accepted_after(second_conns, revoke)
        # Then it too is refused everywhere within the bound
        print(f"Redis restarted: last accepted request {worst * 1000:.1f} ms after the revocation; per process {per_pid}")
        assert len(per_pid) == 2 and worst < BOUND_S
    finally:
        if own_redis.poll() is None:
            os.killpg(own_redis.pid, signal.SIGKILL)
            own_redis.wait()


def test_a_cached_token_stops_working_at_its_expiry(start_web: Callable[..., WebProcess], store: Store) -> None:
    # Given a token that expires in 3 seconds, cached by the (warmed-up) process that serves it
    web = start_web(QUIET)
    Conn(web, issue_token(store, "acme", "warm-up", ("run",), create_space=True).token)
    short = issue_token(store, "acme", "short", ("run",), expires_in=timedelta(seconds=3))
    conn = Conn(web, short.token)
    assert short.expires_at is not None
    # When it is used until its expiry
    statuses: list[tuple[float, int]] = []
    while time.time() < short.expires_at.timestamp() + 0.3:
        statuses.append((time.time(), conn.get()))
    # Then every request sent before the expiry worked, and none sent after it did
    expiry = short.expires_at.timestamp()
    assert all(status == 200 for sent, status in statuses if sent < expiry - 0.05)
    assert all(status == 401 for sent, status in statuses if sent > expiry + 0.05)
    assert statuses[-1][1] == 401


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0

