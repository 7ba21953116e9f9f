"""Idempotency keys: a repeated submit returns the run the key started; a key belongs to one workflow."""
from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration

GREETING = {"inputs": {"name": {"type": "string", "required": True}},
            "nodes": [{"id": "hello", "type": "template", "config": {"template": "hello {{ inputs.name }}"}}],
            "outputs": {"text": "{{ hello.text }}"}}


def _runs_of(api: Any, workflow_id: str) -> list[dict[str, Any]]:
    return api.client.get(f"/v1/runs?workflow_id={workflow_id}").get_json()["runs"]


def test_repeated_key_for_the_same_workflow_returns_the_same_run(api: Any) -> None:
    # Given a run started with a key
    workflow_id = api.create_workflow(GREETING)
    first = api.submit(workflow_id, {"name": "ada"}, idempotency_key="ticket-1234")

    # When the same submit is sent again with the same key
    second = api.client.post(f"/v1/workflows/{workflow_id}/runs",
                             json={"inputs": {"name": "ada"}, "idempotency_key": "ticket-1234"})

    # Then it answers 202 with the first run, and no second run exists
    assert second.status_code == 202, second.get_json()
    assert second.get_json()["run_id"] == first
    assert [r["run_id"] for r in _runs_of(api, workflow_id)] == [first]


def test_key_reused_for_another_workflow_is_409_naming_the_run_that_holds_it(api: Any) -> None:
    # Given a run of workflow A started with a key
    workflow_a = api.create_workflow(GREETING, name="a")
    workflow_b = api.create_workflow(GREETING, name="b")
    first = api.submit(workflow_a, {"name": "ada"}, idempotency_key="ticket-1234")

    # When the same key is used to start workflow B
    response = api.client.post(f"/v1/workflows/{workflow_b}/runs",
                               json={"inputs": {"name": "bob"}, "idempotency_key": "ticket-1234"})

    # Then it is a conflict naming A's run and workflow, and B has no run
    assert response.status_code == 409, response.get_json()
    body = response.get_json()
    assert body["code"] == 4090
    assert body["field"] == "idempotency_key"
    assert body["run_id"] == first and body["workflow_id"] == workflow_a
    assert first in body["msg"] and workflow_a in body["msg"]
    assert _runs_of(api, workflow_b) == []
    # and a new key starts workflow B
    assert api.submit(workflow_b, {"name": "bob"}, idempotency_key="ticket-1234-b") != first
