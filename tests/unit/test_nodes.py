"""Unit tests of the pure built-in node types: no processes, no network."""
from __future__ import annotations

import time
from typing import Any

import jinja2
import pytest
from pydantic import ValidationError

from engine.errors import NodeTimeout, PermanentNodeError
from engine.nodes import BUILTIN_NODE_TYPES, get_node_type
from engine.nodes.aggregator import AggregatorNode
from engine.nodes.base import NodeContext, NodeType
from engine.nodes.http import HttpNode, is_forbidden_address
from engine.nodes.json_nodes import JsonParseNode, JsonSerializeNode
from engine.nodes.selector import SelectorNode, evaluate
from engine.nodes.sleep import SleepNode
from engine.nodes.template import TemplateNode
from engine.settings import Settings

RUN_VARS = {"start": {"name": "Ada"}}


def _render(text: str, extra: dict[str, Any]) -> str:
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(text).render({**RUN_VARS, **extra})


def make_ctx(timeout_s: float = 10.0) -> NodeContext:
    return NodeContext(run_id="run-1", node_id="node-1", attempt=1, timeout_s=timeout_s,
                       settings=Settings(), render_text=_render)


def make_node(node_type: type[NodeType], **config: Any) -> NodeType:
    return node_type(node_type.Config.model_validate(config))


# --- registry ---------------------------------------------------------------------------

def test_registry_lists_every_builtin_by_type_name() -> None:
    assert set(BUILTIN_NODE_TYPES) == {"template", "code", "http", "selector", "aggregator",
                                       "json_parse", "json_serialize", "sleep", "question", "input", "llm",
                                       "intent", "text", "variable_aggregator", "message",
                                       "workflow", "batch", "loop", "set_variable", "break", "continue"}
    for name, node_type in BUILTIN_NODE_TYPES.items():
        assert node_type.type_name == name
        assert get_node_type(name) is node_type


def test_unknown_node_type_raises_key_error_naming_it() -> None:
    with pytest.raises(KeyError, match="nope"):
        get_node_type("nope")


def test_unknown_config_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="tempalte"):
        TemplateNode.Config.model_validate({"template": "x", "tempalte": "y"})


# --- template ---------------------------------------------------------------------------

def test_template_renders_inputs_as_top_level_variables_with_the_run_context() -> None:
    # Given a template using a node input and a run variable
    node = make_node(TemplateNode, template="Hello {{ who }}, from {{ start.name }}")
    # When it runs
    outputs = node.run(make_ctx(), {"who": "Grace"})
    # Then both are rendered
    assert outputs == {"text": "Hello Grace, from Ada"}


def test_template_declares_raw_template_and_text_output() -> None:
    config = TemplateNode.Config.model_validate({"template": "x"})
    assert TemplateNode.raw_fields == {"template"}
    assert TemplateNode.output_fields(config, None) == {"text"}


# --- selector ---------------------------------------------------------------------------

@pytest.mark.parametrize(("left", "op", "right", "expected"), [
    (1, "=", 1, True),
    (1, "=", "1", True),
    ("1.50", "=", 1.5, True),
    ("a", "=", "a", True),
    ("a", "=", "b", False),
    (True, "=", "true", True),
    (True, "=", 1, False),
    (None, "=", None, True),
    ([1, 2], "=", [1, 2], True),
    (1, "!=", 2, True),
    ("x", "!=", "x", False),
    (10, ">", 9, True),
    ("10", ">", "9", True),
    ("10", ">", 9.5, True),
    ("b", ">", "a", True),
    ("abc", ">", 1, False),
    (None, ">", 1, False),
    ([1], "<", 2, False),
    (3, ">=", 3, True),
    (2, "<", 3, True),
    (3, "<=", 2, False),
    ("hello world", "contains", "world", True),
    ("hello", "contains", "z", False),
    ("id-42", "contains", 42, True),
    ([1, 2, 3], "contains", 2, True),
    ([1, 2, 3], "contains", "2", True),
    (["a"], "contains", "b", False),
    ({"k": 1}, "contains", "k", True),
    ({"k": 1}, "contains", "v", False),
    (None, "contains", "x", False),
    (5, "contains", 5, False),
    ("hello", "not_contains", "z", True),
    ([1], "not_contains", 1, False),
    (None, "empty", None, True),
    ("", "empty", None, True),
    ([], "empty", None, True),
    ({}, "empty", None, True),
    (0, "empty", None, False),
    (" ", "empty", None, False),
    ("x", "not_empty", None, True),
    (None, "not_empty", None, False),
    (True, "is_true", None, True),
    ("true", "is_true", None, True),
    (1, "is_true", None, False),
    (False, "is_false", None, True),
    (None, "is_false", None, False),
])
def test_selector_operator(left: Any, op: str, right: Any, expected: bool) -> None:
    assert evaluate(op, left, right) is expected


def _selector(*branches: dict[str, Any]) -> NodeType:
    return make_node(SelectorNode, branches=list(branches))


def test_selector_chooses_the_first_matching_branch_in_order() -> None:
    node = _selector(
        {"name": "small", "conditions": [{"left": 5, "op": "<", "right": 3}]},
        {"name": "medium", "conditions": [{"left": 5, "op": "<", "right": 10}]},
        {"name": "also_medium", "conditions": [{"left": 5, "op": "<", "right": 100}]},
    )
    assert node.run(make_ctx(), {}) == {"branch": "medium"}


def test_selector_falls_back_to_else_when_no_branch_matches() -> None:
    node = _selector({"name": "yes", "conditions": [{"left": "a", "op": "=", "right": "b"}]})
    assert node.run(make_ctx(), {}) == {"branch": "else"}


def test_selector_and_needs_every_condition_or_needs_one() -> None:
    conditions = [{"left": 1, "op": "=", "right": 1}, {"left": 1, "op": "=", "right": 2}]
    assert _selector({"name": "b", "logic": "and", "conditions": conditions}).run(make_ctx(), {}) == {"branch": "else"}
    assert _selector({"name": "b", "logic": "or", "conditions": conditions}).run(make_ctx(), {}) == {"branch": "b"}


def test_selector_ports_are_branch_names_plus_else() -> None:
    config = SelectorNode.Config.model_validate(
        {"branches": [{"name": "a", "conditions": [{"left": 1, "op": "is_true"}]},
                      {"name": "b", "conditions": [{"left": 1, "op": "is_true"}]}]})
    assert SelectorNode.ports(config) == {"a", "b", "else"}
    assert SelectorNode.port_output == "branch"
    assert SelectorNode.output_fields(config, None) == {"branch"}


@pytest.mark.parametrize(("branches", "message"), [
    ([], "at least 1"),
    ([{"name": "else", "conditions": [{"left": 1, "op": "is_true"}]}], "reserved"),
    ([{"name": "error", "conditions": [{"left": 1, "op": "is_true"}]}], "reserved"),
    ([{"name": "not valid", "conditions": [{"left": 1, "op": "is_true"}]}], "identifier"),
    ([{"name": "a", "conditions": [{"left": 1, "op": "is_true"}]},
      {"name": "a", "conditions": [{"left": 1, "op": "is_true"}]}], "used twice"),
    ([{"name": "a", "conditions": []}], "conditions"),
    ([{"name": "a", "conditions": [{"left": 1, "op": "~"}]}], "op"),
])
def test_selector_config_refuses_bad_branches(branches: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SelectorNode.Config.model_validate({"branches": branches})


# --- aggregator -------------------------------------------------------------------------

def test_aggregator_outputs_the_first_non_null_value_of_values_as_value() -> None:
    node = make_node(AggregatorNode)
    assert node.run(make_ctx(), {"values": [None, "", "b"]}) == {"value": ""}
    assert node.run(make_ctx(), {"values": [None, None]}) == {"value": None}


def test_aggregator_outputs_named_groups_under_their_own_names() -> None:
    node = make_node(AggregatorNode)
    outputs = node.run(make_ctx(), {"answer": [None, 42], "source": ["web", None]})
    assert outputs == {"answer": 42, "source": "web"}
    assert AggregatorNode.join == "any"


def test_aggregator_refuses_a_group_that_is_not_a_list() -> None:
    with pytest.raises(PermanentNodeError, match="'answer'"):
        make_node(AggregatorNode).run(make_ctx(), {"answer": "x"})


# --- json -------------------------------------------------------------------------------

def test_json_parse_outputs_the_parsed_value() -> None:
    assert make_node(JsonParseNode).run(make_ctx(), {"text": '{"a": [1, "é"]}'}) == {"value": {"a": [1, "é"]}}


def test_json_parse_error_names_the_position() -> None:
    with pytest.raises(PermanentNodeError, match=r"line 1 column 7 \(char 6\)") as caught:
        make_node(JsonParseNode).run(make_ctx(), {"text": '{"a": }'})
    assert not caught.value.retryable


def test_json_parse_refuses_a_non_string_text() -> None:
    with pytest.raises(PermanentNodeError, match="'text' must be a string"):
        make_node(JsonParseNode).run(make_ctx(), {"text": 5})


def test_json_serialize_keeps_unicode_unescaped() -> None:
    outputs = make_node(JsonSerializeNode).run(make_ctx(), {"value": {"emoji": "🎉"}})
    assert outputs == {"text": '{"emoji": "🎉"}'}


def test_json_serialize_refuses_values_json_cannot_hold() -> None:
    with pytest.raises(PermanentNodeError, match="'value'"):
        make_node(JsonSerializeNode).run(make_ctx(), {"value": float("nan")})


# --- sleep ------------------------------------------------------------------------------

def test_sleep_sleeps_and_reports_the_seconds() -> None:
    started = time.monotonic()
    assert make_node(SleepNode, seconds=0.3).run(make_ctx(), {}) == {"slept_s": 0.3}
    assert time.monotonic() - started >= 0.3


def test_sleep_longer_than_the_remaining_timeout_raises_node_timeout_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(NodeTimeout, match="seconds=5"):
        make_node(SleepNode, seconds=5).run(make_ctx(timeout_s=1), {})
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("seconds", [-1, 86401])
def test_sleep_config_bounds_seconds(seconds: float) -> None:
    with pytest.raises(ValidationError, match="seconds"):
        SleepNode.Config.model_validate({"seconds": seconds})


# --- http config and address guard (pure) ------------------------------------------------

@pytest.mark.parametrize(("address", "forbidden"), [
    ("127.0.0.1", True), ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True),
    ("169.254.169.254", True), ("0.0.0.0", True), ("224.0.0.1", True), ("240.0.0.1", True),
    ("100.64.0.1", True), ("::1", True), ("::", True), ("fe80::1", True), ("fc00::1", True),
    ("::ffff:127.0.0.1", True), ("ff02::1", True),
    ("93.184.216.34", False), ("8.8.8.8", False), ("2606:4700:4700::1111", False),
])
def test_http_address_guard(address: str, forbidden: bool) -> None:
    assert is_forbidden_address(address) is forbidden


@pytest.mark.parametrize(("config", "message"), [
    ({"url": "https://x", "json_body": {"a": 1}}, "json_body is set but body_type is 'none'"),
    ({"url": "https://x", "body_type": "raw"}, "raw is not set"),
    ({"url": "https://x", "method": "TRACE"}, "method"),
    ({"url": "https://x", "timeout_s": 0}, "timeout_s"),
])
def test_http_config_refuses_inconsistent_settings(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        HttpNode.Config.model_validate(config)


@pytest.mark.parametrize("url", ["ftp://example.com/file", "file:///etc/passwd", "not a url"])
def test_http_refuses_non_http_urls_before_any_io(url: str) -> None:
    with pytest.raises(PermanentNodeError, match="url"):
        make_node(HttpNode, url=url).run(make_ctx(), {})
