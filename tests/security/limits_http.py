"""Small HTTP helpers for the limits tests: talk to the real gunicorn with a bearer token."""
from __future__ import annotations

import time
from typing import Any

import httpx


def post_workflow(base_url: str, token: str, definition: Any, timeout_s: float = 30.0) -> tuple[httpx.Response, float]:
    """POST /v1/workflows; returns the response and how long it took."""
    started = time.monotonic()
    response = httpx.post(f"{base_url}/v1/workflows", json={"name": "attack", "definition": definition},
                          headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s)
    return response, time.monotonic() - started


def poll(base_url: str, token: str, timeout_s: float = 10.0) -> tuple[int, float]:
    """GET /v1/workflows (a cheap authenticated read); returns the status and how long it took."""
    started = time.monotonic()
    response = httpx.get(f"{base_url}/v1/workflows", headers={"Authorization": f"Bearer {token}"},
                         timeout=timeout_s)
    return response.status_code, time.monotonic() - started
