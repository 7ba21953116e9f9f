"""Helpers of the prompt library tests: tokens of given owners and scopes, and a client per token."""
from __future__ import annotations

from typing import Any

from engine.db import get_engine
from engine.settings import Settings
from engine.store import Store
from engine.tokens import issue_token


def make_client(app: Any, settings: Settings, space: str, user: str,
                scopes: tuple[str, ...] = ("run", "manage")) -> Any:
    """A test client sending a new token of `space` owned by `user` (the space is created if missing)."""
    store = Store.from_engine(get_engine(settings))
    issued = issue_token(store, space, f"{user}-token", scopes, None, create_space=True, owner=user)
    test_client = app.test_client()
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {issued.token}"
    return test_client


def new_prompt(client: Any, key: str, text: str = "Hello {{ name }}", **extra: Any) -> dict[str, Any]:
    """Create a prompt (asserting 201) and return it."""
    body = {"key": key, "version": {"text": text, "variables": [{"name": "name", "required": False}]}, **extra}
    response = client.post("/v1/prompts", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def save(client: Any, key: str, base: int, text: str) -> Any:
    """POST a new version based on `base`; the response."""
    return client.post(f"/v1/prompts/{key}/versions", json={"base_version": base, "text": text})
