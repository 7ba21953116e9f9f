"""Templates in definitions: type keeping, text rendering, sandboxing, reference scanning (no I/O)."""
from __future__ import annotations

import pytest

from engine.errors import PermanentNodeError
from engine.templates import TemplateError, compile_value, find_references, render_text


def test_a_single_reference_keeps_its_type() -> None:
    # Given a value whose strings are each exactly one expression
    value = compile_value({"n": "{{ inputs.priority }}", "items": " {{ a.items }} ", "ok": "{{ a.flag }}"})

    # When it is rendered
    out = value.render({"inputs": {"priority": 3}, "a": {"items": [1, 2], "flag": False}})

    # Then each result keeps the expression's type (and `.items` is the key, not dict.items)
    assert out == {"n": 3, "items": [1, 2], "ok": False}


def test_a_mixed_string_renders_as_text() -> None:
    value = compile_value("P{{ inputs.priority }}: {{ inputs.title | upper }}")

    assert value.render({"inputs": {"priority": 2, "title": "down"}}) == "P2: DOWN"


def test_whitespace_control_markers_do_not_break_a_single_expression() -> None:
    assert compile_value("{{- inputs.n -}}").render({"inputs": {"n": 4}}) == 4


def test_plain_strings_and_literals_stay_as_they_are() -> None:
    source = {"a": "plain {text}", "b": [1, 2.5, True, None], "c": {"d": "{# not a template #}"}}
    value = compile_value(source)

    assert value.is_static
    assert value.render({}) == source


def test_rendering_returns_fresh_containers() -> None:
    # Given a rendered value that a node then mutates
    value = compile_value({"list": [1], "t": "{{ x }}"})
    first = value.render({"x": 1})
    first["list"].append(2)

    # Then the next render is unaffected
    assert value.render({"x": 1}) == {"list": [1], "t": 1}


def test_a_skipped_node_renders_empty_in_text_and_none_in_an_expression() -> None:
    context = {"inputs": {}, "clean": None}

    assert compile_value("[{{ clean.text }}]").render(context) == "[]"
    assert compile_value("{{ clean.text }}").render(context) is None
    assert compile_value("{{ inputs.missing.deeper }}").render(context) is None
    assert compile_value(["{{ clean.text }}", "{{ [clean.text] }}"]).render(context) == [None, [None]]


def test_structured_values_render_as_json_in_text() -> None:
    assert render_text("got {{ a }}", {"a": {"k": [1, "é"]}}) == 'got {"k": [1, "é"]}'


def test_emoji_round_trips_unchanged() -> None:
    text = "héllo 😀 𝄞 {{ inputs.x }} 🚀"

    assert compile_value(text).render({"inputs": {"x": "🦄"}}) == "héllo 😀 𝄞 🦄 🚀"
    assert compile_value("{{ inputs.x }}").render({"inputs": {"x": "👩‍💻"}}) == "👩‍💻"
    assert render_text("😀\n", {}) == "😀\n"


def test_render_text_caches_and_renders() -> None:
    assert render_text("{{ a }}-{{ a }}", {"a": 1}) == "1-1"
    assert render_text("{{ a }}-{{ a }}", {"a": 2}) == "2-2"
    assert render_text("no template", {}) == "no template"


def test_a_syntax_error_names_the_field() -> None:
    with pytest.raises(TemplateError) as caught:
        compile_value({"body": {"items": ["ok", "{{ x "]}})

    assert caught.value.errors[0]["field"] == "body.items[1]"
    assert "syntax error" in caught.value.errors[0]["message"]


def test_include_and_import_are_refused_at_definition_time() -> None:
    with pytest.raises(TemplateError, match="include"):
        compile_value("{% include 'other' %}")


def test_the_sandbox_refuses_unsafe_attributes() -> None:
    with pytest.raises(PermanentNodeError):
        compile_value("{{ x.__class__.__mro__[1].__subclasses__() }}").render({"x": 1})


def test_a_failing_expression_is_a_permanent_node_error() -> None:
    with pytest.raises(PermanentNodeError, match="division by zero"):
        compile_value({"v": "{{ 1 / 0 }}"}).render({})


def test_references_are_root_and_first_attribute() -> None:
    refs = find_references("{{ clean.text }} {{ inputs.ticket | upper }}")

    assert refs == {("clean", "text"), ("inputs", "ticket")}


def test_references_cover_subscripts_nested_values_and_bare_names() -> None:
    refs = find_references({"a": ["{{ n['k'] }}", "{{ m[0] }}"], "b": "{{ whole }}", "c": 3})

    assert refs == {("n", "k"), ("m", None), ("whole", None)}


def test_names_bound_in_the_template_are_not_references() -> None:
    source = ("{% for row in rows.items %}{{ row.name }}{{ loop.index }}{% endfor %}"
              "{% set total = sums.all %}{{ total }}{{ range(3) | list }}"
              "{% macro m(arg) %}{{ arg.x }}{% endmacro %}{{ m(q) }}")

    assert find_references(source) == {("rows", "items"), ("sums", "all"), ("q", None)}


def test_a_name_used_before_a_loop_binds_it_is_still_a_reference() -> None:
    source = "{{ item.a }}{% for item in things %}{{ item.b }}{% endfor %}"

    assert find_references(source) == {("item", "a"), ("things", None)}
