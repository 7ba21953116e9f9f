"""The durable run lifecycle end to end: API → Postgres → Redis → real worker processes."""
from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration

LINEAR = {
    "inputs": {"name": {"type": "string", "required": True}},
    "nodes": [
        {"id": "greet", "type": "template", "config": {"template": "Hello {{ inputs.name }}"}},
        {"id": "shout", "type": "template", "config": {"template": "{{ greet.text | upper }}!"}},
    ],
    "outputs": {"message": "{{ shout.text }}", "original": "{{ inputs.name }}"},
}


def test_linear_run_succeeds_with_outputs_and_node_history(api: Any, start_worker: Any) -> None:
    # Given a worker and a two-node workflow
    start_worker()
    workflow_id = api.create_workflow(LINEAR)
    # When a run is submitted
    run_id = api.submit(workflow_id, {"name": "Ada 🚀"})
    run = api.wait(run_id)
    # Then it succeeds, with rendered outputs and every node checkpointed once
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"message": "HELLO ADA 🚀!", "original": "Ada 🚀"}
    assert [(n["node_id"], n["status"], n["attempts"]) for n in run["nodes"]] == [
        ("greet", "succeeded", 1), ("shout", "succeeded", 1)]
    assert run["started_at"] and run["finished_at"]
