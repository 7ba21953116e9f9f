"""LLM `parameters` cannot redirect the operator's keys (issue 9, item 2).

Before: `parameters: {api_base: ...}` (or base_url, extra_headers, ...) was passed to LiteLLM
as a call keyword and overrode the registry's connection: the model's API key and header
secrets went to the author's host. Now `parameters` is an allowlist of sampling settings:
anything else is a 422 at save naming the node and key, a rendered config is checked again,
and the calling layer drops non-sampling keywords. A loopback listener standing in for the
attacker's host receives nothing.
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from api.localstack.fake_llm import FakeLLM
from tests.security.limits_http import post_workflow

pytestmark = pytest.mark.integration

CONNECTION_KEYS = ["api_base", "base_url", "api_key", "extra_headers", "headers", "custom_llm_provider",
                   "timeout", "metadata", "callbacks", "api_version", "n"]


class Listener:
    """A loopback TCP listener that records every connection it gets (the attacker's host)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.connections = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def stop(self) -> None:
        """Stop listening."""
        self.stopped.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    """The attacker's host."""
    found = Listener()
    yield found
    found.stop()


def llm_node(parameters: Any) -> dict[str, Any]:
    """One llm node with these parameters."""
    return {"inputs": {"p": {"type": "any"}, "host": {"type": "string", "default": ""}},
            "nodes": [{"id": "ask", "type": "llm",
                       "config": {"model": "m", "prompt": "hi", "stream": False, "parameters": parameters}}]}


def value_for(key: str, url: str) -> Any:
    """A plausible value for a connection keyword pointing at `url`."""
    return {"extra_headers": {"X-To": url}, "headers": {"X-To": url}, "metadata": {"u": url},
            "callbacks": [url], "timeout": 5, "n": 5}.get(key, url)


def test_connection_settings_in_parameters_are_refused_at_save_naming_the_key(
        web_server: str, token: str, listener: Listener) -> None:
    # Given the real API and an attacker's host on loopback
    for key in CONNECTION_KEYS:
        # When a workflow sets a connection keyword in an llm node's parameters
        response, _ = post_workflow(web_server, token, llm_node({"temperature": 0.2, key: value_for(key, listener.url)}))
        # Then it is a 422 naming the node and the key
        assert response.status_code == 422, (key, response.text)
        errors = response.json()["errors"]
        assert {"node_id": "ask", "field": f"config.parameters.{key}"} in [
            {"node_id": e["node_id"], "field": e["field"]} for e in errors], (key, errors)
        assert any("unknown" in e["message"] and "temperature" in e["message"] for e in errors), errors
    # And a templated value is no excuse
    response, _ = post_workflow(web_server, token, llm_node({"api_base": "{{ inputs.host }}"}))
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "config.parameters.api_base"
    # And out-of-range sampling settings are refused too
    response, _ = post_workflow(web_server, token, llm_node({"temperature": 50, "max_tokens": -1}))
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {"config.parameters.temperature",
                                                               "config.parameters.max_tokens"}
    # And the attacker's host heard nothing
    assert listener.connections == 0


def test_parameters_rendered_from_run_inputs_cannot_redirect_the_call(
        api: Any, client: Any, fake_llm: FakeLLM, write_model: Any, inline_worker: Any, listener: Listener) -> None:
    # Given a registry model served by the fake provider, and parameters that are one template
    write_model("m", "echo")
    assert client.post("/v1/models/refresh").status_code == 200
    workflow_id = api.create_workflow(llm_node("{{ inputs.p }}"))
    # When a run's inputs render them into a connection setting
    run = api.wait(api.submit(workflow_id, {"p": {"api_base": listener.url, "temperature": 0.1}}), timeout_s=60)
    # Then the node fails, naming the key, before any call; the attacker's host and the provider heard nothing
    assert run["status"] == "failed", run
    assert "parameters.api_base" in run["error"]["message"], run["error"]
    assert listener.connections == 0
    assert fake_llm.requests == []


def test_max_tokens_is_clamped_to_the_models_output_limit(
        api: Any, client: Any, fake_llm: FakeLLM, write_model: Any, inline_worker: Any) -> None:
    # Given a model whose registry entry allows 100 output tokens
    write_model("m", "echo", capability={"json_mode": True, "output_tokens": 100})
    assert client.post("/v1/models/refresh").status_code == 200
    # When a node asks for 50,000 with sampling settings of its own
    run = api.wait(api.submit(api.create_workflow(llm_node({"max_tokens": 50000, "temperature": 0.3, "seed": 7}))),
                   timeout_s=60)
    # Then the provider is asked for 100, with the author's sampling settings
    assert run["status"] == "succeeded", run
    sent = fake_llm.requests[-1]
    assert sent["max_tokens"] == 100 and sent["temperature"] == 0.3 and sent["seed"] == 7, sent
