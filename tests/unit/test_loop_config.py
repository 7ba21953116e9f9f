"""Save-time checks of the `loop` node and the body-only nodes (no servers)."""
from __future__ import annotations

from typing import Any

import pytest

from engine.compiler import compile_workflow
from engine.errors import DefinitionError


def loop(config: dict[str, Any]) -> dict[str, Any]:
    body = config.pop("body", [{"id": "t", "type": "template", "config": {"template": "{{ index }}"}}])
    return {"nodes": [{"id": "L", "type": "loop", "config": {"nodes": body, **config}}]}


def problems(definition: dict[str, Any]) -> list[tuple[str | None, str | None, str]]:
    with pytest.raises(DefinitionError) as caught:
        compile_workflow(definition)
    return [(e["node_id"], e["field"], e["message"]) for e in caught.value.details["errors"]]


@pytest.mark.parametrize(("config", "field", "words"), [
    ({"mode": "array"}, "config.items", "mode 'array' needs config.items"),
    ({"mode": "count"}, "config.count", "mode 'count' needs config.count"),
    ({"mode": "while"}, "config.condition", "mode 'while' needs config.condition"),
    ({"mode": "count", "count": 3, "items": [1]}, "config.items", "not used in mode 'count'"),
    ({"mode": "array", "items": [1], "condition": "true"}, "config.condition", "not used in mode 'array'"),
    ({"mode": "count", "count": -1}, "config.count", "greater than or equal to 0"),
    ({"mode": "while", "condition": "vars.n <"}, "config.condition", "syntax error"),
    ({"mode": "while", "condition": "{{ vars.n < 3 }}"}, "config.condition", "without {{ }}"),
    ({"mode": "count", "count": 1, "max_iterations": 0}, "config.max_iterations", "greater than or equal to 1"),
    ({"mode": "count", "count": 1, "variables": {"not a name": 1}}, "config.variables", "must be an identifier"),
    ({"mode": "count", "count": 1, "outputs": {"variables": "x"}}, "config.outputs", "reserved"),
    ({"mode": "loop", "count": 1}, "config.mode", "'array', 'count' or 'while'"),
    ({"mode": "count", "count": 1, "body": []}, "config.nodes", "at least 1 item"),
])
def test_a_bad_loop_config_is_refused_naming_the_node_and_the_field(config: dict[str, Any], field: str,
                                                                     words: str) -> None:
    found = problems(loop(config))
    assert any(node == "L" and f == field and words in message for node, f, message in found), found


@pytest.mark.parametrize("node_type", ["set_variable", "break", "continue"])
def test_body_only_nodes_are_refused_outside_a_loop_body(node_type: str) -> None:
    config = {"values": {"x": 1}} if node_type == "set_variable" else {}
    top = {"nodes": [{"id": "n", "type": node_type, "config": config}]}
    assert problems(top) == [("n", "type", f"a '{node_type}' node is allowed only in the body of a 'loop' node "
                                           "(its config.nodes)")]
    in_batch = {"nodes": [{"id": "B", "type": "batch", "config": {
        "items": [1], "nodes": [{"id": "n", "type": node_type, "config": config}]}}]}
    assert [p[:2] for p in problems(in_batch)] == [("B/n", "type")]


def test_set_variable_may_set_only_the_loops_own_variables() -> None:
    definition = loop({"mode": "count", "count": 2, "variables": {"a": 0},
                       "body": [{"id": "s", "type": "set_variable", "config": {"values": {"a": 1, "b": 2}}}]})
    assert problems(definition) == [("L/s", "config.values.b",
                                     "'b' is not a variable of the loop; declared in its config.variables: a")]


def test_a_valid_loop_compiles_its_body_with_item_index_and_vars_visible() -> None:
    definition = loop({"mode": "array", "items": "{{ inputs.xs }}", "variables": {"total": 0},
                       "body": [{"id": "s", "type": "set_variable",
                                 "config": {"values": {"total": "{{ vars.total + item + index }}"}}},
                                {"id": "sel", "type": "selector", "config": {"branches": [
                                    {"name": "big", "conditions": [{"left": "{{ item }}", "op": ">", "right": 9}]}]}},
                                {"id": "stop", "type": "break", "after": ["sel.big"]},
                                {"id": "skip", "type": "continue", "after": ["sel.else"]}],
                       "outputs": {"seen": "{{ vars.total }}"}})
    definition["inputs"] = {"xs": {"type": "array"}}
    body = compile_workflow(definition).nodes["L"].body
    assert body is not None
    assert set(body.nodes) == {"s", "sel", "stop", "skip"}
    assert body.nodes["s"].needs_run_inputs  # vars, item and index live in the iteration's inputs
    assert set(body.inputs) >= {"item", "index", "vars"}


def test_a_loop_nested_in_a_loop_owns_its_own_body_only_nodes() -> None:
    inner = {"id": "inner", "type": "loop", "config": {
        "mode": "count", "count": 2, "variables": {"k": 0},
        "nodes": [{"id": "s", "type": "set_variable", "config": {"values": {"k": 1}}}]}}
    definition = loop({"mode": "count", "count": 2, "variables": {"n": 0},
                       "body": [inner, {"id": "s", "type": "set_variable", "config": {"values": {"n": 1}}}]})
    compiled = compile_workflow(definition)
    assert compiled.body_at("L/inner").nodes["s"].type_name == "set_variable"
