"""A small HTTP client of the Relayflow API (see API.md), used by the `relayflow` command.

Error answers become the engine's own exception tree, so callers handle one kind of error.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from engine.errors import (
    DefinitionError, EngineError, Forbidden, InvalidInputs, InvalidTransition, NotFound,
    ServiceUnavailable, Unauthorized,
)

DEFAULT_URL = "http://127.0.0.1:8000"
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
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

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"cannot reach Relayflow at {self.base_url} ({exc}); "
                                     "is `relayflow up` running, or is --url right?") from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return dict(response.json()) if response.content else {}

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

    def submit_run(self, workflow_id: str, inputs: dict[str, Any],
                   idempotency_key: str | None = None) -> dict[str, Any]:
        """Start a run: `{run_id, status}`."""
        body: dict[str, Any] = {"inputs": inputs}
        if idempotency_key:
            body["idempotency_key"] = idempotency_key
        return self._request("POST", f"/v1/workflows/{workflow_id}/runs", body)

    def get_run(self, run_id: str) -> dict[str, Any]:
        """The run object: status, outputs, error and its nodes."""
        return self._request("GET", f"/v1/runs/{run_id}")

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        """Ask for a run to be cancelled."""
        return self._request("POST", f"/v1/runs/{run_id}/cancel")
