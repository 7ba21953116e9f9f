"""Node-level batch (Coze's batch mode on LLM and plugin nodes): `batch: {items, concurrency, …}` on
any node is sugar for a `batch` node whose inline body is that one node.

No I/O: the compiler expands the raw node before checking it, so every later check (and every error,
named `node/node` inside the body) is the batch node's.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.definition import validate_config
from engine.nodes.base import NodeType
from engine.templates import TemplateError, find_references, template_strings

# Node-level batch (`batch:` on any node): its keys, and which of the node's keys stay on the item's
# node (what runs per item) or move to the batch node (its place in the graph).
NODE_BATCH_KEYS = frozenset({"items", "concurrency", "max_items", "on_item_error"})
NODE_BATCH_INNER_KEYS = ("type", "title", "config", "inputs", "retry", "timeout_s", "outputs")
NODE_BATCH_OUTER_KEYS = ("title", "description", "after", "join", "on_error", "default_output")


def expand_node_batch(raw: dict[str, Any], node_id: str | None, node_types: Mapping[str, type[NodeType[Any]]],
                      input_names: set[str]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """A node with `batch: {items, concurrency, …}` (Coze's batch mode) is a `batch` node whose
    body is that one node: the node runs once per item (seeing `item` and `index`), and each of
    its outputs becomes an array. The run inputs it references stay `inputs.<name>` inside."""
    errors: list[dict[str, Any]] = []

    def error(message: str) -> tuple[None, list[dict[str, Any]]]:
        errors.append({"node_id": node_id, "field": "batch", "message": message})
        return None, errors

    batch = raw["batch"]
    if not isinstance(batch, dict):
        return error("must be an object: {items, concurrency, max_items, on_item_error}")
    unknown = sorted(set(batch) - NODE_BATCH_KEYS)
    if unknown or "items" not in batch:
        problem = f"unknown key '{unknown[0]}'" if unknown else "'items' is required"
        return error(f"{problem}; allowed keys: {', '.join(sorted(NODE_BATCH_KEYS))}")
    inner = {key: raw[key] for key in NODE_BATCH_INNER_KEYS if key in raw}
    fields = _output_fields(raw, node_types)
    if fields is None:
        return error("a node-level batch needs the node's `outputs` declared: its type's outputs are only known "
                     "when it runs")
    passed: set[str] = set()
    for _where, text in template_strings({"config": raw.get("config"), "inputs": raw.get("inputs")}):
        try:
            refs = find_references(text)
        except TemplateError:
            continue  # reported where the body's node is checked
        for root, attr in refs:
            if root == "inputs":
                passed |= {attr} if attr is not None else set(input_names)
    outer = {key: raw[key] for key in NODE_BATCH_OUTER_KEYS if key in raw}
    return {**outer, "id": node_id, "type": "batch",
            "inputs": {name: "{{ inputs." + name + " }}" for name in sorted(passed)},
            "config": {**batch, "nodes": [{**inner, "id": node_id}],
                       "outputs": {name: "{{ " + str(node_id) + "." + name + " }}" for name in sorted(fields)}}}, errors


def _output_fields(raw: dict[str, Any], node_types: Mapping[str, type[NodeType[Any]]]) -> frozenset[str] | None:
    """The output fields of a raw node: its declared outputs, else its type's (None if dynamic,
    or if the node is too broken to tell: its own checks report why)."""
    if isinstance(raw.get("outputs"), dict) and raw["outputs"]:
        return frozenset(raw["outputs"])
    node_type = node_types.get(str(raw.get("type")))
    config: dict[str, Any] = raw["config"] if isinstance(raw.get("config"), dict) else {}
    if node_type is None:
        return frozenset()
    templated = {k for k, v in config.items() if k not in node_type.opaque_fields and any(template_strings(v))}
    validated, _errors = validate_config(node_type.Config, config, templated, node_id=str(raw.get("id")))
    if validated is None:
        return frozenset()
    try:
        return node_type.output_fields(validated, None)
    except Exception:  # a type that cannot tell from a templated config
        return None

