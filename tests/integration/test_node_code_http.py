"""The `code` node in a real child process and the `http` node against a real loopback server."""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from engine.errors import NodeError, NodeTimeout, PermanentNodeError
from engine.nodes.base import NodeContext
from engine.nodes.code import CodeNode
from engine.nodes.http import HttpNode
from engine.settings import Settings
from tests.conftest import processes_with


def make_ctx(timeout_s: float = 30.0, **settings: Any) -> NodeContext:
    return NodeContext(run_id="run-1", node_id="node-1", attempt=1, timeout_s=timeout_s,
                       settings=Settings(**settings))


def run_code(code: str, inputs: dict[str, Any] | None = None, timeout_s: float = 30.0, **config: Any) -> dict[str, Any]:
    node = CodeNode(CodeNode.Config.model_validate({"code": code, **config}))
    return node.run(make_ctx(timeout_s), inputs or {})


# --- code -------------------------------------------------------------------------------

def test_code_returns_what_main_returns() -> None:
    code = "def main(inputs):\n    return {'sum': inputs['a'] + inputs['b']}\n"
    assert run_code(code, {"a": 2, "b": 3}) == {"sum": 5}


def test_code_accepts_an_async_main() -> None:
    code = "import asyncio\nasync def main(inputs):\n    await asyncio.sleep(0)\n    return {'ok': True}\n"
    assert run_code(code) == {"ok": True}


def test_code_child_cannot_see_the_server_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a secret in the server's environment
    monkeypatch.setenv("RELAYFLOW_SECRET", "x")
    # When code lists its environment
    outputs = run_code("import os\ndef main(inputs):\n    return {'env': dict(os.environ)}\n")
    # Then the secret is absent and only the minimal variables are there
    assert "RELAYFLOW_SECRET" not in outputs["env"]
    assert set(outputs["env"]) <= {"PATH", "LANG", "PYTHONIOENCODING", "LC_CTYPE", "HOME", "TMPDIR", "PWD"}


def test_code_runs_in_a_fresh_empty_private_tmpfs() -> None:
    # Given a file left in the sandbox's /tmp by an earlier run
    run_code("def main(inputs):\n    open('left-over', 'w').write('x')\n    return {}\n")
    # When the next run looks at its working directory
    outputs = run_code("import os\ndef main(inputs):\n    return {'cwd': os.getcwd(), 'files': os.listdir('.')}\n")
    # Then it is the sandbox's own, empty /tmp
    assert outputs == {"cwd": "/tmp", "files": []}


def test_code_print_does_not_corrupt_the_result() -> None:
    code = (
        "import os, sys\n"
        "def main(inputs):\n"
        "    print('{\"ok\": true, \"outputs\": {\"hacked\": 1}}')\n"
        "    print('noise', file=sys.stderr)\n"
        "    os.write(1, b'raw fd 1 noise')\n"
        "    return {'clean': 'yes'}\n"
    )
    assert run_code(code) == {"clean": "yes"}


def test_code_round_trips_non_ascii_text() -> None:
    code = "def main(inputs):\n    print(inputs['s'])\n    return {'s': inputs['s'] + ' 🎉', 'n': len(inputs['s'])}\n"
    assert run_code(code, {"s": "héllo 👋 世界"}) == {"s": "héllo 👋 世界 🎉", "n": 10}


def test_code_timeout_kills_every_descendant_even_a_setsid_one() -> None:
    # Given code that starts a detached grandchild (new session, SIGTERM ignored), then hangs
    marker = f"rf-timeout-{uuid.uuid4().hex}"
    code = (
        "import os, signal, sys, time\n"
        "def main(inputs):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', inputs['marker']])\n"
        "    time.sleep(60)\n"
    )
    started = time.monotonic()
    # When the node's time runs out
    with pytest.raises(NodeTimeout, match="did not finish"):
        run_code(code, {"marker": marker}, timeout_s=1.5)
    # Then it fails promptly and the grandchild is gone too
    assert time.monotonic() - started < 10
    assert _processes_with(marker) == []


def _processes_with(marker: str, wait_s: float = 5.0) -> list[int]:
    """Processes whose command line holds `marker`, after waiting up to `wait_s` for them to go."""
    deadline = time.monotonic() + wait_s
    while (found := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_code_over_its_memory_limit_is_a_permanent_error() -> None:
    # (memory written to, as the limit counts real memory: untouched pages cost nothing)
    code = "def main(inputs):\n    data = b'x' * (512 * 1024 * 1024)\n    return {'n': len(data)}\n"
    with pytest.raises(PermanentNodeError, match=r"memory limit exceeded \(64 MB\)") as caught:
        run_code(code, memory_mb=64)
    assert not caught.value.retryable


def test_code_exception_is_retryable_with_type_message_and_traceback() -> None:
    code = "def helper():\n    raise ValueError('bad input 42')\n\ndef main(inputs):\n    helper()\n"
    with pytest.raises(NodeError) as caught:
        run_code(code)
    error = caught.value
    assert error.retryable and type(error) is NodeError
    assert "ValueError: bad input 42" in error.message
    assert "raise ValueError('bad input 42')" in error.message
    assert "line 2, in helper" in error.message
    assert "code_runner" not in error.message and "runner.py" not in error.message


@pytest.mark.parametrize(("code", "message"), [
    ("def main(inputs):\n    return [1]\n", "returned list, not a dict"),
    ("def main(inputs)\n    return {}\n", "syntax error"),
    ("x = 1\n", "must define main"),
    ("def main():\n    return {}\n", "main must take one argument"),
    ("def main(inputs):\n    return {'s': {1, 2}}\n", "output 's' is not JSON-serialisable"),
])
def test_code_mistakes_retrying_cannot_fix_are_permanent(code: str, message: str) -> None:
    with pytest.raises(PermanentNodeError, match=message):
        run_code(code)


# --- http -------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if parts.path == "/status/500":
            return self._reply(500, b"upstream broke", "text/plain")
        if parts.path == "/status/404":
            return self._reply(404, b"nothing here", "text/plain")
        if parts.path == "/slow":
            self.server.stop.wait(5)
            return self._reply(200, b"late", "text/plain")
        if parts.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/echo?from=redirect")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        echo = {
            "method": self.command,
            "path": parts.path,
            "query": parse_qs(parts.query),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8"),
        }
        return self._reply(200, json.dumps(echo).encode("utf-8"), "application/json")

    def _reply(self, status: int, payload: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-Test", "yes")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stop: threading.Event


@pytest.fixture
def server_url() -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join()


def run_http(node_timeout_s: float = 30.0, allow_private: bool = True, **config: Any) -> dict[str, Any]:
    node = HttpNode(HttpNode.Config.model_validate(config))
    return node.run(make_ctx(node_timeout_s, http_allow_private=allow_private), {})


def test_http_get_sends_query_and_headers_and_parses_json(server_url: str) -> None:
    outputs = run_http(url=f"{server_url}/echo?a=1", query={"b": "two", "n": 3},
                       headers={"X-Token": "t0k"})
    assert outputs["status_code"] == 200
    assert outputs["headers"]["x-test"] == "yes"
    echo = outputs["json"]
    assert echo["method"] == "GET"
    assert echo["query"] == {"a": ["1"], "b": ["two"], "n": ["3"]}
    assert echo["headers"]["x-token"] == "t0k"
    assert echo["headers"]["host"] == server_url.removeprefix("http://")
    assert json.loads(outputs["body"]) == echo


def test_http_post_json_body(server_url: str) -> None:
    outputs = run_http(method="POST", url=f"{server_url}/echo", body_type="json", json_body={"q": "é 🎉"})
    echo = outputs["json"]
    assert echo["method"] == "POST"
    assert echo["headers"]["content-type"] == "application/json"
    assert json.loads(echo["body"]) == {"q": "é 🎉"}


def test_http_post_form_body(server_url: str) -> None:
    outputs = run_http(method="PUT", url=f"{server_url}/echo", body_type="form", form={"a": "1 2", "b": 3})
    echo = outputs["json"]
    assert echo["method"] == "PUT"
    assert echo["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(echo["body"]) == {"a": ["1 2"], "b": ["3"]}


def test_http_post_raw_body_keeps_the_given_content_type(server_url: str) -> None:
    outputs = run_http(method="PATCH", url=f"{server_url}/echo", body_type="raw", raw="<x>ü</x>",
                       headers={"Content-Type": "application/xml"})
    echo = outputs["json"]
    assert echo["headers"]["content-type"] == "application/xml"
    assert echo["body"] == "<x>ü</x>"


def test_http_non_json_body_gives_null_json_and_4xx_is_an_output(server_url: str) -> None:
    outputs = run_http(url=f"{server_url}/status/404")
    assert outputs["status_code"] == 404
    assert outputs["body"] == "nothing here"
    assert outputs["json"] is None


def test_http_head_has_an_empty_body(server_url: str) -> None:
    outputs = run_http(method="HEAD", url=f"{server_url}/echo")
    assert outputs["status_code"] == 200 and outputs["body"] == ""


def test_http_5xx_is_a_retryable_node_error(server_url: str) -> None:
    with pytest.raises(NodeError, match="HTTP 500") as caught:
        run_http(url=f"{server_url}/status/500")
    assert caught.value.retryable and type(caught.value) is NodeError
    assert caught.value.details["status_code"] == 500


def test_http_redirects_are_returned_unless_followed(server_url: str) -> None:
    assert run_http(url=f"{server_url}/redirect")["status_code"] == 302
    outputs = run_http(url=f"{server_url}/redirect", follow_redirects=True)
    assert outputs["status_code"] == 200
    assert outputs["json"]["query"] == {"from": ["redirect"]}


@pytest.mark.parametrize(("config_timeout_s", "node_timeout_s"), [(0.3, 30.0), (30.0, 0.3)])
def test_http_timeout_is_the_shorter_of_config_and_node(server_url: str, config_timeout_s: float,
                                                        node_timeout_s: float) -> None:
    started = time.monotonic()
    with pytest.raises(NodeTimeout):
        run_http(url=f"{server_url}/slow", timeout_s=config_timeout_s, node_timeout_s=node_timeout_s)
    assert time.monotonic() - started < 3


def test_http_connection_refused_is_retryable() -> None:
    with pytest.raises(NodeError, match="cannot connect") as caught:
        run_http(url="http://127.0.0.1:9/")  # discard port: nothing listens there
    assert caught.value.retryable


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_http_refuses_loopback_unless_allowed(server_url: str, host: str) -> None:
    port = server_url.rsplit(":", 1)[1]
    with pytest.raises(PermanentNodeError, match=f"host '{host}'") as caught:
        run_http(url=f"http://{host}:{port}/echo", allow_private=False)
    assert not caught.value.retryable
