"""The web server's connections, for real against gunicorn as `relayflow up` starts it: a 413
closes its connection honestly (issue 10), and every request leaves one access line."""
from __future__ import annotations

import socket
import threading
from pathlib import Path

import httpx
import pytest

from engine.settings import Settings
from tests.conftest import wait_for
from tests.log_lines import log_events

pytestmark = pytest.mark.integration


def _post_oversized(base_url: str, token: str, size: int) -> tuple[bytes, bytes]:
    """POST `size` bytes on a fresh keep-alive connection; (response head, what followed until the server closed)."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=20)  # a server that keeps it open: TimeoutError
    sock.sendall((f"POST /v1/workflows HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n").encode())
    # the body goes out beside the reads: the server answers before it has read it
    sender = threading.Thread(target=lambda: _send_quietly(sock, b" " * size), daemon=True)
    sender.start()
    data = b""
    try:
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        try:
            while chunk := sock.recv(65536):
                rest += chunk
        except ConnectionResetError:  # closed with our body unread: also a close
            pass
    finally:
        sock.close()
    return head, rest


def _send_quietly(sock: socket.socket, body: bytes) -> None:
    try:
        sock.sendall(body)
    except OSError:
        pass


def test_a_413_closes_its_connection_and_the_next_request_is_answered(
        web_server: str, token: str, settings: Settings, tmp_path: Path) -> None:
    limit = settings.max_body_bytes
    assert httpx.get(f"{web_server}/healthz", timeout=60).status_code == 200  # the workers have loaded the app
    # Given a keep-alive connection, when a body over the limit is posted on it
    head, rest = _post_oversized(web_server, token, 16 * limit)
    # Then the 413 says the connection closes, and the server closes it (no promise it breaks)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"\r\nConnection: close\r\n" in head, head
    assert f"larger than {limit} bytes".encode() in rest
    # And a client following HTTP (httpx, a keep-alive pool) gets its refusal, then its next answer
    with httpx.Client(base_url=web_server, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        refused = http.post("/v1/workflows", content=b" " * (16 * limit), headers={"Content-Type": "application/json"})
        assert refused.status_code == 413 and refused.headers["connection"] == "close"
        assert http.get("/v1/workflows").status_code == 200
        assert http.get("/healthz").status_code == 200
    # And each request left one access line, with its method, path, status and time
    # (gunicorn writes a request's access line after its answer: wait for the last one to land)
    wait_for(lambda: len(log_events(tmp_path / "web.log", "http.request")) >= 5, timeout_s=15)
    lines = log_events(tmp_path / "web.log", "http.request")
    requests = [(line["method"], line["path"], line["status"]) for line in lines]
    assert requests.count(("POST", "/v1/workflows", "413")) == 2, lines
    assert requests.count(("GET", "/v1/workflows", "200")) == 1, lines
    assert requests.count(("GET", "/healthz", "200")) == 2, lines
    assert all(line["ts"] and line["duration_ms"] and token not in str(line) for line in lines), lines
