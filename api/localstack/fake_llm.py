"""A fake LLM provider: a real HTTP server on loopback speaking OpenAI chat completions.

Used by the tests and by `relayflow up --demo` (point any OpenAI-compatible base URL at it).
Answers are deterministic (derived from the prompt); an intent node's question (a system
prompt listing intents) is answered with the first intent sharing a word with the prompt. Faults are chosen per request by
directives, `+`-separated, in the requested model name or in a `[[fault: ...]]` marker of the
last user message:

    status=500            answer that HTTP status (with an OpenAI-style error body)
    fail_first=2:429      the first 2 calls of this model name answer 429, later calls succeed
    retry_after=1         Retry-After header (seconds) on error answers
    delay=2.5             wait that many seconds before answering
    bad_json              answer text that is not JSON (even when JSON is asked)
    cut_stream            a streamed answer stops mid-way without `[DONE]` (connection closed)
    reasoning             also return `reasoning_content`
    echo_headers          an error answer quotes every request header, by name (as careless proxies do)
    cached=5              report that many of the prompt tokens as cached (usage.prompt_tokens_details)

Usage: prompt_tokens = the words of every message, completion_tokens = the words of the answer.
"""
from __future__ import annotations

import json
import re
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_INTENT = re.compile(r'"classificationId":\s*(\d+),\s*"content":\s*"((?:[^"\\]|\\.)*)"')
_MARKER = re.compile(r"\[\[fault:([^\]]*)\]\]")


@dataclass
class Faults:
    """The faults one request asks for."""

    status: int | None = None
    fail_first: tuple[int, int] | None = None
    retry_after: str | None = None
    delay_s: float = 0.0
    bad_json: bool = False
    cut_stream: bool = False
    reasoning: bool = False
    echo_headers: bool = False
    cached: int = 0

    @classmethod
    def parse(cls, *sources: str) -> Faults:
        """Read `+`-separated directives from the given strings (unknown words are ignored)."""
        faults = cls()
        for source in sources:
            for word in filter(None, (w.strip() for w in source.split("+"))):
                key, _, value = word.partition("=")
                if key == "status":
                    faults.status = int(value)
                elif key == "fail_first":
                    count, _, status = value.partition(":")
                    faults.fail_first = (int(count), int(status or 500))
                elif key == "retry_after":
                    faults.retry_after = value
                elif key == "delay":
                    faults.delay_s = float(value)
                elif key == "cached":
                    faults.cached = int(value)
                elif key in ("bad_json", "cut_stream", "reasoning", "echo_headers"):
                    setattr(faults, key, True)
        return faults


@dataclass
class FakeLLM:
    """The server and what it saw: `calls` counts requests per model name, `requests` keeps them."""

    host: str = "127.0.0.1"
    port: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # each request's headers, in order
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (ends in /v1)."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeLLM:
        """Listen (port 0 picks a free one) and serve in a daemon thread."""
        owner = self

        class Handler(_Handler):
            fake = owner

        self._server = _QuietServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="fake-llm", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def record(self, model: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> int:
        """Count a request; returns how many calls this model name had, this one included."""
        with self._lock:
            self.calls[model] += 1
            self.requests.append(body)
            self.headers.append(headers or {})
            return self.calls[model]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout) closes the socket under us: not our error


class _Handler(BaseHTTPRequestHandler):
    fake: FakeLLM
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: the tests read the workers' logs, not ours

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": "echo", "object": "model"}]})
        else:
            self._json(404, {"error": {"message": "no such route", "type": "invalid_request_error"}})

    def do_POST(self) -> None:  # noqa: N802
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": "no such route", "type": "invalid_request_error"}})
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        model = str(body.get("model", ""))
        messages = body.get("messages") or []
        last_user = next((_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
        marker = _MARKER.search(last_user)
        faults = Faults.parse(model, marker.group(1) if marker else "")
        count = self.fake.record(model, body, dict(self.headers.items()))
        if faults.delay_s:
            time.sleep(faults.delay_s)
        status = faults.status
        if faults.fail_first and count <= faults.fail_first[0]:
            status = faults.fail_first[1]
        if status and status >= 400:
            headers = {"Retry-After": faults.retry_after} if faults.retry_after else {}
            message = f"fake provider answers {status}"
            if status == 401:  # like some providers, quote the key: callers must mask it
                message = f"Incorrect API key provided: {self.headers.get('Authorization', '')[7:]}"
            if faults.echo_headers:
                quoted = sorted(self.headers.items(), key=lambda kv: kv[0].lower())  # a stable order
                message += "; request headers: " + ", ".join(f"{k}: {v}" for k, v in quoted)
            self._json(status, {"error": {"message": message, "type": "fake_error", "code": str(status)}}, headers)
            return
        prompt = _MARKER.sub("", last_user).strip()
        wants_json = (body.get("response_format") or {}).get("type") in ("json_object", "json_schema")
        system = next((_text(m) for m in messages if m.get("role") == "system"), "")
        answer = _answer(prompt, wants_json, faults.bad_json, system)
        usage: dict[str, Any] = {"prompt_tokens": sum(len(_text(m).split()) for m in messages),
                 "completion_tokens": len(answer.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if faults.cached:
            usage["prompt_tokens_details"] = {"cached_tokens": min(faults.cached, usage["prompt_tokens"])}
        reasoning = f"Thinking about: {prompt[:40]}" if faults.reasoning else None
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(model, answer, reasoning, usage if include_usage else None, faults.cut_stream)
            return
        reply: dict[str, Any] = {"role": "assistant", "content": answer}
        if reasoning:
            reply["reasoning_content"] = reasoning
        self._json(200, {"id": "chatcmpl-" + uuid.uuid4().hex[:12], "object": "chat.completion",
                         "created": int(time.time()), "model": model,
                         "choices": [{"index": 0, "message": reply, "finish_reason": "stop"}],
                         "usage": usage})

    def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, model: str, answer: str, reasoning: str | None, usage: dict[str, Any] | None,
                cut: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk_id = "chatcmpl-" + uuid.uuid4().hex[:12]
        pieces = re.findall(r"\S+\s*", answer) or [answer]

        def send(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
            event = {"id": chunk_id, "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()

        send({"role": "assistant", "content": ""})
        if reasoning:
            send({"reasoning_content": reasoning})
        for index, piece in enumerate(pieces):
            if cut and index >= max(1, len(pieces) // 2):
                self.close_connection = True
                return  # the connection closes without a final chunk or [DONE]
            send({"content": piece})
        send({}, "stop")
        if usage is not None:
            final = {"id": chunk_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                     "choices": [], "usage": usage}
            self.wfile.write(f"data: {json.dumps(final)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _answer(prompt: str, wants_json: bool, bad_json: bool, system: str = "") -> str:
    if bad_json:
        return "Sure! Here is the JSON you asked for: {echo: oops"
    if "Intention classification list" in system:
        return _classify(prompt, system, wants_json)
    if wants_json:
        return json.dumps({"echo": prompt, "words": len(prompt.split()), "upper": prompt.upper()})
    return f"Echo: {prompt}"


def _classify(prompt: str, system: str, wants_json: bool) -> str:
    """An intent node's question: the first listed intent one of whose words (4+ letters) the prompt has, else 0."""
    words = set(re.findall(r"\w{4,}", prompt.lower()))
    chosen, reason = 0, "no listed intent matches"
    for number, content in _INTENT.findall(system):
        shared = sorted(words & set(re.findall(r"\w{4,}", content.lower())))
        if int(number) > 0 and shared:
            chosen, reason = int(number), f"the text mentions {shared[0]!r}"
            break
    return json.dumps({"classificationId": chosen, "reason": reason}) if wants_json else str(chosen)


def main() -> None:
    """Serve on a port given as the first argument (default 8089) until interrupted."""
    fake = FakeLLM(port=int(sys.argv[1]) if len(sys.argv) > 1 else 8089).start()
    print(f"fake LLM provider at {fake.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
