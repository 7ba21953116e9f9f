"""Template bombs (issue 9, item 3): arithmetic and repetition in templates are bounded.

Before: Jinja folded `{{ (9**20000000) % 7 }}` while compiling a saved definition, freezing a
gunicorn worker until it was killed; `{{ 'x' * 10**8 }}` held ~95 MB per request. Now such a
definition is refused at save with a 422 naming the node and field, promptly, while the API
keeps answering; bombs that depend on run inputs fail their node with a clear error.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import WebProcess
from tests.security.limits_http import poll, post_workflow

pytestmark = pytest.mark.integration

SAVE_TIME_BOMBS = {
    "power": "{{ (9**20000000) % 7 }}",
    "repetition": "{{ 'x' * 10**8 }}",
    "center": "{{ 'x'|center(10**9) }}",
    "printf_width": "{{ '%1000000000d' % 1 }}",
    "format_width": "{{ '{:>1000000000}'.format(1) }}",
    "ljust": "{{ 'x'.ljust(1000000000) }}",
    "range": "{% for i in range(10**8) %}{% endfor %}",
}


def template_workflow(template: str, **node: Any) -> dict[str, Any]:
    """One template node rendering `template`."""
    return {"inputs": {"s": {"type": "string", "default": "x"}, "n": {"type": "integer", "default": 1}},
            "nodes": [{"id": "bomb", "type": "template", "config": {"template": template}, **node}],
            "outputs": {"text": "{{ bomb.text }}"}}


def bomb_workflow(template: str, where: str) -> dict[str, Any]:
    """The bomb in a node input or in a template node's text."""
    if where == "inputs.v":
        return template_workflow("{{ v }}", inputs={"v": template})
    return template_workflow(template)


def test_template_bombs_posted_in_parallel_are_refused_promptly_while_the_api_keeps_answering(
        start_web: Callable[..., WebProcess], token: str) -> None:
    web_server = start_web(workers=2).url  # as deployed: bombs must not freeze either process
    # Given the real gunicorn, and every bomb posted at once in a node input (compiled, and once
    # constant-folded, at save) and in a template node's text
    bombs = [(name, template, where) for name, template in SAVE_TIME_BOMBS.items()
             for where in ("inputs.v", "config.template")]
    for _ in range(4):  # both gunicorn workers have answered once (first requests set up connections)
        assert poll(web_server, token, timeout_s=30)[0] == 200
    polls: list[tuple[int, float]] = []
    with ThreadPoolExecutor(len(bombs)) as pool:
        futures = [(f"{name} in {where}", where, pool.submit(post_workflow, web_server, token, bomb_workflow(t, where)))
                   for name, t, where in bombs]
        # When a client keeps polling the API meanwhile
        while not all(f.done() for _, _, f in futures):
            polls.append(poll(web_server, token))
            time.sleep(0.05)
        results = [(name, where, f.result()) for name, where, f in futures]
    polls.append(poll(web_server, token))
    # Then every bomb is a prompt 422 naming the node, the field and the limit
    for name, where, (response, elapsed_s) in results:
        assert response.status_code == 422, (name, response.text)
        error = response.json()["errors"][0]
        assert (error["node_id"], error["field"]) == ("bomb", where), (name, error)
        assert "limit" in error["message"] and "RELAYFLOW_TEMPLATE_MAX_" in error["message"], (name, error)
        assert elapsed_s < 10, (name, elapsed_s)
    # And the API answered every poll, quickly
    assert all(status == 200 for status, _ in polls), polls
    assert max(seconds for _, seconds in polls) < 5, polls


def test_a_bomb_built_from_run_inputs_fails_its_node_with_the_limit_named(api: Any, inline_worker: Any) -> None:
    # Given a template whose size depends on the run's inputs, saved (nothing is known at save)
    workflow_id = api.create_workflow(template_workflow("{{ inputs.s * inputs.n }}"))
    # When a run asks for 10**8 repetitions
    run = api.wait(api.submit(workflow_id, {"s": "x", "n": 10**8}), timeout_s=60)
    # Then the node fails at once with a permanent error naming the limit, and nothing is stored for it
    assert run["status"] == "failed", run
    node = api.node(run, "bomb")
    assert node["status"] == "failed" and node.get("output") in (None, {}), node
    message = run["error"]["message"]
    assert "template limit" in message and "RELAYFLOW_TEMPLATE_MAX_CHARS" in message, run["error"]
    assert len(node["attempt_errors"]) == 1, node


def test_a_doubling_loop_over_shared_lists_fails_its_node_instead_of_exhausting_memory(
        api: Any, inline_worker: Any) -> None:
    # Given a loop doubling a list made of shared parts (tiny in memory, 2**60 items as JSON)
    template = ("{% set ns = namespace(v=[inputs.s]) %}{% for i in range(60) %}{% set ns.v = [ns.v, ns.v] %}"
                "{% endfor %}{{ ns.v }}")
    run = api.wait(api.submit(api.create_workflow(template_workflow(template))), timeout_s=60)
    # Then the node fails naming the size limit
    assert run["status"] == "failed", run
    assert "RELAYFLOW_TEMPLATE_MAX_CHARS" in run["error"]["message"], run["error"]


def test_ordinary_templates_still_render(api: Any, inline_worker: Any) -> None:
    # Given arithmetic, repetition, formatting and loops of ordinary sizes
    template = ("{{ 2**10 }} {{ '%05d' % 42 }} {{ '{:>4}'.format('a') }} {{ 'ab' * 3 }} {{ 'x' ~ inputs.s }} "
                "{% for i in range(3) %}{{ i }}{% endfor %} {{ [1, 2]|join('-') }} {{ 'hi'|center(6) }}")
    run = api.wait(api.submit(api.create_workflow(template_workflow(template))), timeout_s=60)
    # Then they render as before
    assert run["status"] == "succeeded", run
    assert run["outputs"]["text"] == "1024 00042    a ababab xx 012 1-2   hi  "
