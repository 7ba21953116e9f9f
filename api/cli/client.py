"""A small HTTP client of the Relayflow API (see API.md), used by the `relayflow` command.

Error answers become the engine's own exception tree, so callers handle one kind of error.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from engine.errors import (
    DefinitionError,
    EngineError,
    Forbidden,
    InvalidInputs,
    InvalidTransition,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)
from engine.statuses import FINAL_STATUSES

DEFAULT_URL = "http://127.0.0.1:8000"
FINAL_EVENTS = frozenset({"run.succeeded", "run.failed", "run.cancelled"})
# The server sends a keep-alive at least every 15 s: a longer silence means the connection is dead.
STREAM_READ_TIMEOUT_S = 45.0
DEMO_INPUTS_KEY = "demo_inputs"

_BY_STATUS: dict[int, type[EngineError]] = {
    401: Unauthorized, 403: Forbidden, 404: NotFound, 409: InvalidTransition, 503: ServiceUnavailable,
}


@dataclass(frozen=True)
class WorkflowFile:
    """A workflow document read from a file, split into what the API takes and the demo inputs."""

    name: str
    description: str | None
    definition: dict[str, Any]
    demo_inputs: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> WorkflowFile:
        """Parse a YAML or JSON workflow file; a top-level `demo_inputs` is not part of the definition."""
        # Imported here: engine.definition loads every node type (LiteLLM too), seconds that
        # the commands reading no workflow file (status, watch, cancel...) would pay.
        from engine.definition import load_definition

        try:
            document = load_definition(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DefinitionError(f"cannot read {path}: {exc.strerror}") from exc
        if not isinstance(document, dict):
            raise DefinitionError(f"{path} does not hold a workflow document (a mapping)")
        demo_inputs = document.pop(DEMO_INPUTS_KEY, None) or {}
        if not isinstance(demo_inputs, dict):
            raise DefinitionError(f"{path}: `{DEMO_INPUTS_KEY}` must be a mapping of input names to values",
                                  field=DEMO_INPUTS_KEY)
        name = document.get("name") or path.stem
        return cls(str(name), document.get("description"), document, demo_inputs)


def parse_input(item: str) -> tuple[str, Any]:
    """`key=value` with the value read as JSON when it parses (`n=3`, `tags=["a"]`), else as text."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected key=value, got {item!r}")
    try:
        return key.strip(), json.loads(raw)
    except ValueError:
        return key.strip(), raw


def error_from_response(response: httpx.Response) -> EngineError:
    """The engine exception matching an error answer (`{code, msg, errors?}`)."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("msg") or body.get("message") or f"HTTP {response.status_code} {response.reason_phrase}")
    errors = body.get("errors") if isinstance(body.get("errors"), list) else None
    error: EngineError
    if response.status_code == 422 and body.get("code") == InvalidInputs.code:
        error = InvalidInputs(message, errors=errors)
    elif response.status_code == 422:
        error = DefinitionError(message, errors=errors or [{"message": message}])
    else:
        error = _BY_STATUS.get(response.status_code, EngineError)(message)
    error.http_status = response.status_code
    if isinstance(body.get("code"), int):
        error.code = body["code"]
    return error


class Client:
    """The Relayflow HTTP API, with a bearer token."""

    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None, *, timeout_s: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 timeout_s: float | None = None) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body,
                                          timeout=timeout_s if timeout_s is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return dict(response.json()) if response.content else {}

    def _unreachable(self, exc: Exception) -> ServiceUnavailable:
        return ServiceUnavailable(f"cannot reach Relayflow at {self.base_url} ({exc or type(exc).__name__}); "
                                  "is `relayflow up` running, or is --url right?")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Any route: the JSON answer, or the API's error raised as the engine's (`params`: the query)."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        return self._request(method, f"{path}?{urlencode(query)}" if query else path, body)

    def healthy(self) -> bool:
        """True when `GET /healthz` answers 200 (PostgreSQL and Redis reachable)."""
        try:
            return self._http.get("/healthz", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def create_workflow(self, name: str, definition: dict[str, Any], description: str | None = None) -> dict[str, Any]:
        """Register a workflow (version 1): `{workflow_id, version}`."""
        body: dict[str, Any] = {"name": name, "definition": definition}
        if description:
            body["description"] = description
        return self._request("POST", "/v1/workflows", body)

    def submit_run(self, workflow_id: str, inputs: dict[str, Any], idempotency_key: str | None = None, *,
                   version: int | None = None, mode: str = "async", wait_s: float | None = None) -> dict[str, Any]:
        """Start a run: `{run_id, status}`; in sync mode the whole run object once it has ended or
        waits for input within `wait_s` (else still `{run_id, status}`)."""
        body: dict[str, Any] = {"inputs": inputs}
        if idempotency_key:
            body["idempotency_key"] = idempotency_key
        if version is not None:
            body["version"] = version
        timeout_s = None
        if mode != "async":
            body["mode"] = mode
            if wait_s is not None:
                body["wait_s"] = wait_s
            # the server holds the answer up to wait_s (30 s by default, 300 s at most)
            timeout_s = (wait_s or 30.0) + 30.0
        return self._request("POST", f"/v1/workflows/{workflow_id}/runs", body, timeout_s)

    def get_run(self, run_id: str) -> dict[str, Any]:
        """The run object: status, outputs, error and its nodes."""
        return self._request("GET", f"/v1/runs/{run_id}")

    def diagnose_run(self, run_id: str) -> dict[str, Any]:
        """Why the run is not moving: what each node that is not final waits for."""
        return self._request("GET", f"/v1/runs/{run_id}/diagnosis")

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        """Ask for a run to be cancelled."""
        return self._request("POST", f"/v1/runs/{run_id}/cancel")

    def resume_run(self, run_id: str, event_id: str, data: Any) -> dict[str, Any]:
        """Answer the run's interrupt `event_id`: `{run_id, status, event_id, node_id}`."""
        return self._request("POST", f"/v1/runs/{run_id}/resume", {"event_id": event_id, "data": data})

    def events(self, run_id: str, last_event_id: int = 0, *, retries: int = 5, backoff_s: float = 0.5,
               keepalives: bool = False) -> Iterator[dict[str, Any] | None]:
        """The run's events (`{id, type, node_id, data, created_at}`) after `last_event_id`, live;
        with `keepalives`, None for each keep-alive the server sends while nothing happens.

        Ends after the run's final event, or when the run has ended and nothing is left to send. A
        dropped or closed connection is reopened with Last-Event-ID, so no event is lost or repeated;
        after `retries` failed reconnections in a row it raises ServiceUnavailable.
        """
        failures = 0
        while True:
            heard = False  # an event or a keep-alive on this connection
            try:
                with self._http.stream("GET", f"/v1/runs/{run_id}/events",
                                       headers={"Last-Event-ID": str(last_event_id), "Accept": "text/event-stream"},
                                       timeout=httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT_S)) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise error_from_response(response)
                    for item in parse_sse(response.iter_lines()):
                        heard = True
                        failures = 0
                        if item is None:
                            if keepalives:
                                yield None
                            continue
                        if isinstance(item.get("id"), int):
                            last_event_id = max(last_event_id, item["id"])
                        yield item
                        if item["type"] in FINAL_EVENTS:
                            return
            except httpx.TransportError as exc:
                failures += 1
                if failures > retries:
                    raise self._unreachable(exc) from exc
                time.sleep(backoff_s * 2 ** (failures - 1))
                continue
            except ServiceUnavailable:
                failures += 1
                if failures > retries:
                    raise
                time.sleep(backoff_s * 2 ** (failures - 1))
                continue
            # The server closed without the final event: its sse_max_s, or a proxy. Nothing heard and
            # the run ended means nothing is left to send; else reopen where we are.
            if not heard:
                if self.get_run(run_id).get("status") in FINAL_STATUSES:
                    return
                time.sleep(backoff_s)


def parse_sse(lines: Iterable[str]) -> Iterator[dict[str, Any] | None]:
    """Server-Sent Events lines → each frame's JSON data (its `id` filled from the frame), or None for a
    keep-alive comment. Frames without data (`retry:`) are skipped."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                item = json.loads("\n".join(data))
                if isinstance(item, dict):
                    if "id" not in item and fields.get("id", "").isdigit():
                        item["id"] = int(fields["id"])
                    item.setdefault("type", fields.get("event", "message"))
                    yield item
            fields, data = {}, []
            continue
        if line.startswith(":"):
            yield None
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "data":
            data.append(value)
        else:
            fields[key] = value
