"""Output caps (issue 9, item 7): node outputs, rendered node inputs and run outputs are bounded.

Before: a 300-byte workflow produced a 105 MB `GET /v1/runs/{id}`. Now a node whose output
(or rendered inputs) passes its cap fails with a permanent error naming the node, the size
and the limit; nothing is stored for it and its successors never run. Run outputs over their
cap fail the run the same way. The caps are lowered here so the test stays light.
"""
from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def text_node(node_id: str, template: str, **extra: Any) -> dict[str, Any]:
    """A template node."""
    return {"id": node_id, "type": "template", "config": {"template": template}, **extra}


INPUTS = {"s": {"type": "string", "default": "x"}, "n": {"type": "integer", "default": 1}}


def test_a_node_output_over_its_cap_fails_the_node_and_nothing_is_half_written(
        api: Any, client: Any, settings: Any, inline_worker: Any) -> None:
    # Given a 100 kB cap on node outputs, and a node whose output size the run chooses
    settings.node_output_max_bytes = 100_000
    definition = {"inputs": INPUTS, "nodes": [text_node("big", "{{ inputs.s * inputs.n }}"),
                                              text_node("after", "{{ big.text|length }}")],
                  "outputs": {"n": "{{ after.text }}"}}
    workflow_id = api.create_workflow(definition)
    # When a run makes it 200 kB
    run_id = api.submit(workflow_id, {"n": 200_000})
    run = api.wait(run_id, timeout_s=60)
    # Then the node fails with a permanent error naming the node, its size and the limit
    assert run["status"] == "failed", run
    message = run["error"]["message"]
    assert "Node big output is" in message and "100,000 bytes" in message, message
    assert "RELAYFLOW_NODE_OUTPUT_MAX_BYTES" in message, message
    big = api.node(run, "big")
    assert big["status"] == "failed" and not big.get("output"), big
    assert len(big["attempt_errors"]) == 1, big  # permanent: not retried
    # And the successor never ran, and the run object stays small
    assert api.node(run, "after")["status"] not in ("succeeded", "running"), run
    assert len(client.get(f"/v1/runs/{run_id}").data) < 20_000
    # And a run under the cap succeeds
    assert api.wait(api.submit(workflow_id, {"n": 50_000}), timeout_s=60)["outputs"] == {"n": "50000"}


def test_rendered_inputs_over_their_cap_fail_the_node_before_it_runs(
        api: Any, settings: Any, inline_worker: Any) -> None:
    # Given a 100 kB cap on a node's rendered inputs, and a node repeating a 60 kB upstream text
    settings.node_input_max_bytes = 100_000
    definition = {"inputs": INPUTS, "nodes": [
        text_node("up", "{{ inputs.s * inputs.n }}"),
        text_node("fan", "{{ a|length + b|length }}", inputs={"a": "{{ up.text }}", "b": "{{ up.text }}"})]}
    run = api.wait(api.submit(api.create_workflow(definition), {"n": 60_000}), timeout_s=60)
    # Then the node fails naming the inputs limit
    assert run["status"] == "failed", run
    assert run["error"]["node_id"] == "fan", run["error"]
    assert "rendered inputs" in run["error"]["message"], run["error"]
    assert "RELAYFLOW_NODE_INPUT_MAX_BYTES" in run["error"]["message"], run["error"]


def test_run_outputs_over_their_cap_fail_the_run_and_are_not_stored(
        api: Any, client: Any, settings: Any, inline_worker: Any) -> None:
    # Given a 300 kB cap on run outputs, and outputs repeating a 150 kB node text four times
    settings.run_output_max_bytes = 300_000
    definition = {"inputs": INPUTS, "nodes": [text_node("big", "{{ inputs.s * inputs.n }}")],
                  "outputs": dict.fromkeys(("a", "b", "c", "d"), "{{ big.text }}")}
    run_id = api.submit(api.create_workflow(definition), {"n": 150_000})
    run = api.wait(run_id, timeout_s=60)
    # Then the run fails naming the limit, with no outputs stored
    assert run["status"] == "failed", run
    assert "RELAYFLOW_RUN_OUTPUT_MAX_BYTES" in run["error"]["message"], run["error"]
    assert not run.get("outputs"), list(run.get("outputs") or {})
    assert len(json.dumps(run)) < 400_000
