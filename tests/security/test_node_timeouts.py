"""Node timeouts hold whatever runs the node (issue 9, item 5, first half).

Before: a `template` node with `timeout_s: 2` held a worker thread for 10 s (Jinja ran the
loops to the end; the executor only compared the clock afterwards). Now the template sandbox
checks the node's deadline in its hooks, and a watchdog interrupts a thread still inside a
node's work `node_timeout_grace_s` past its timeout (work with no hook to check).
"""
from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = pytest.mark.integration

NESTED_LOOPS = "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}done"
# Loops over a variable call no sandbox hook: only the watchdog can stop them.
HOOKLESS_LOOPS = "{% set s = inputs.s %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}done"


def one_node(template: str, timeout_s: float) -> dict[str, Any]:
    """A template node with a timeout, retried never."""
    return {"inputs": {"s": {"type": "string", "default": ""}},
            "nodes": [{"id": "slow", "type": "template", "timeout_s": timeout_s, "config": {"template": template}}]}


def trivial() -> dict[str, Any]:
    """A node that renders at once."""
    return {"nodes": [{"id": "quick", "type": "template", "config": {"template": "ok"}}],
            "outputs": {"text": "{{ quick.text }}"}}


@pytest.mark.parametrize("template, inputs, expected", [
    (NESTED_LOOPS, {}, "still rendering at the node's timeout"),
    (HOOKLESS_LOOPS, {"s": "x" * 30000}, "ran past its timeout"),
], ids=["cooperative", "watchdog"])
def test_a_template_node_past_its_timeout_fails_and_frees_the_only_worker_thread(
        api: Any, settings: Any, start_worker: Any, template: str, inputs: dict[str, Any], expected: str) -> None:
    # Given a worker with ONE thread, and a template node with timeout_s 2 that would loop for minutes
    settings.node_timeout_grace_s = 1.0
    start_worker(threads=1)
    slow_id = api.create_workflow(one_node(template, 2))
    quick_id = api.create_workflow(trivial())
    # When it runs, and a trivial run is submitted right behind it
    started = time.monotonic()
    slow = api.submit(slow_id, inputs)
    quick = api.submit(quick_id)
    run = api.wait(slow, timeout_s=60)
    took_s = time.monotonic() - started
    # Then the node fails with a timeout error within a few seconds, not minutes
    assert run["status"] == "failed", run
    node = api.node(run, "slow")
    assert node["attempt_errors"][-1]["error"]["kind"] == "timeout", node
    assert expected in run["error"]["message"], run["error"]
    assert took_s < 30, took_s
    # And the same single thread goes on to run the next run
    assert api.wait(quick, timeout_s=30)["outputs"] == {"text": "ok"}
