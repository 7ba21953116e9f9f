"""Unit tests of the save-time check of an llm node's models against a set of model ids (no I/O)."""
from __future__ import annotations

from typing import Any

from engine.compiler import compile_workflow
from engine.nodes.llm import unknown_model_errors


def configs(*nodes: dict[str, Any]) -> dict[str, Any]:
    """Node id -> compiled config of a workflow of these llm nodes (plus a template node)."""
    workflow = compile_workflow({
        "inputs": {"m": {"type": "string"}},
        "nodes": [*({"id": f"n{i}", "type": "llm", "config": {"prompt": "hi", **n}} for i, n in enumerate(nodes)),
                  {"id": "t", "type": "template", "config": {"template": "x"}}]})
    return {node_id: node.config for node_id, node in workflow.nodes.items()}


def test_known_models_and_nodes_of_other_types_pass() -> None:
    assert unknown_model_errors(configs({"model": "a", "fallback_models": ["b", "a"]}), {"a", "b"}) == []


def test_each_missing_model_is_named_with_its_field_a_hint_and_a_few_available_ids() -> None:
    errors = unknown_model_errors(configs({"model": "gtp-4", "fallback_models": ["gpt-4", "zz"]}),
                                  {"gpt-4", "a", "b", "c", "d", "e", "f"})
    assert [(e["node_id"], e["field"]) for e in errors] == [("n0", "config.model"), ("n0", "config.fallback_models[1]")]
    assert "model 'gtp-4' is not in the model registry (did you mean 'gpt-4'?)" in errors[0]["message"]
    assert "available: a, b, c, d, e (and 2 more)" in errors[0]["message"]
    assert "model 'zz'" in errors[1]["message"]


def test_templated_model_ids_are_left_to_the_run() -> None:
    found = configs({"model": "{{ inputs.m }}", "fallback_models": ["{{ inputs.m }}", "x"]},
                    {"model": "a", "fallback_models": "{{ inputs.m }}"})
    assert [(e["node_id"], e["field"]) for e in unknown_model_errors(found, {"a"})] == [
        ("n0", "config.fallback_models[1]")]


def test_an_empty_registry_refuses_every_llm_node_even_a_templated_one() -> None:
    errors = unknown_model_errors(configs({"model": "a"}, {"model": "{{ inputs.m }}"}), set())
    assert [(e["node_id"], e["field"]) for e in errors] == [("n0", "config.model"), ("n1", "config.model")]
    assert all("the model registry has no models" in e["message"] for e in errors)
    assert errors[0]["message"].startswith("model 'a' is not available")
