"""Definition limits (issue 9, item 4): no YAML aliases; size, depth and node count bounded.

Before: a 463-byte YAML definition using nested aliases expanded to 8 MB of JSON (ten more
levels exhaust the machine); nothing bounded a definition's depth or node count. Now aliases
are refused, and each limit gives a 422 naming it, never a 500, while the API keeps answering.
"""
from __future__ import annotations

import json
from typing import Any

import pytest

from tests.security.limits_http import poll, post_workflow

pytestmark = pytest.mark.integration

# Nine levels of nine aliases: 463 bytes of YAML, 9**9 strings once expanded.
ALIAS_BOMB = "\n".join(
    ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    + ["nodes: [{id: t, type: template, config: {template: x}, inputs: {v: *a8}}]"])


def assert_limit_error(response: Any, needle: str, field: str | None = None) -> dict[str, Any]:
    """A 422 whose first error names the limit (and the field)."""
    assert response.status_code == 422, response.text[:500]
    error = response.json()["errors"][0]
    assert needle in error["message"], error
    if field is not None:
        assert error["field"] == field, error
    return error


def test_a_yaml_alias_bomb_is_refused(web_server: str, token: str) -> None:
    # Given a web worker that has served a save already (its clock must not count its warm-up)
    assert post_workflow(web_server, token, "nodes: [{id: t, type: template, config: {template: x}}]")[0].status_code == 201
    # When the alias bomb is saved as YAML text
    assert len(ALIAS_BOMB.encode()) < 800
    response, elapsed_s = post_workflow(web_server, token, ALIAS_BOMB)
    # Then it is refused at the first alias, promptly
    error = assert_limit_error(response, "YAML aliases are not allowed", "definition")
    assert "*a0" in error["message"]
    assert elapsed_s < 10
    # And a merge key (which is an alias too) is refused the same way
    merge = "base: &b {type: template}\nnodes: [{<<: *b, id: t, config: {template: x}}]\n"
    assert_limit_error(post_workflow(web_server, token, merge)[0], "YAML aliases are not allowed")


def test_a_definition_over_the_size_limit_is_refused_naming_the_limit(
        web_server: str, token: str, settings: Any) -> None:
    # Given the default limit (512 KiB), a 600 KB YAML definition, as text and as a JSON object
    big = "x" * 600_000
    text = f"nodes: [{{id: t, type: template, config: {{template: '{big}'}}}}]"
    assert_limit_error(post_workflow(web_server, token, text)[0], "RELAYFLOW_DEFINITION_MAX_BYTES", "definition")
    as_object = {"nodes": [{"id": "t", "type": "template", "config": {"template": big}}]}
    assert_limit_error(post_workflow(web_server, token, as_object)[0], "RELAYFLOW_DEFINITION_MAX_BYTES")


@pytest.mark.parametrize("shape", ["yaml_text", "json_text", "json_object"])
def test_a_definition_nested_too_deep_is_refused_naming_the_limit(web_server: str, token: str, shape: str) -> None:
    # Given a definition nested 40 levels (the default limit is 32), or 100,000 as text
    nested: Any = "x"
    for _ in range(40):
        nested = [nested]
    doc = {"nodes": [{"id": "t", "type": "template", "config": {"template": "x"}, "inputs": {"v": nested}}]}
    definition = {"yaml_text": "nodes: " + "[" * 100_000 + "]" * 100_000,
                  "json_text": '{"nodes": ' + "[" * 100_000 + "]" * 100_000 + "}",
                  "json_object": doc}[shape]
    # When it is saved, Then a 422 names the depth limit
    assert_limit_error(post_workflow(web_server, token, definition)[0], "RELAYFLOW_DEFINITION_MAX_DEPTH")
    assert poll(web_server, token)[0] == 200


def test_a_request_body_nested_too_deep_is_a_client_error_not_a_500(web_server: str, token: str) -> None:
    # Given a JSON body nested 100,000 levels (Python's parser would hit its recursion limit)
    import httpx

    body = '{"name": "x", "definition": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = httpx.post(f"{web_server}/v1/workflows", content=body, timeout=30,
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    # Then the API answers with a 4xx and keeps answering
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert poll(web_server, token)[0] == 200


def test_a_definition_with_too_many_nodes_is_refused_naming_the_limit(web_server: str, token: str) -> None:
    # Given 501 nodes (the default limit is 500)
    doc = {"nodes": [{"id": f"n{i}", "type": "template", "config": {"template": "x"}} for i in range(501)]}
    # Then a 422 names the node-count limit
    assert_limit_error(post_workflow(web_server, token, doc)[0], "RELAYFLOW_DEFINITION_MAX_NODES", "nodes")
    # And 500 nodes are fine
    doc["nodes"].pop()
    response, _ = post_workflow(web_server, token, json.dumps(doc))
    assert response.status_code == 201, response.text[:300]
