"""Prompt versions, variables, search patterns, diffs and node references: pure rules."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.errors import InvalidInputs, PermanentNodeError
from engine.nodes.prompt_ref import PromptRef, missing_prompt_errors
from engine.official_prompts import official_prompts
from engine.prompt_docs import VersionDoc, check_label, fill_variables, search_pattern, unified_diff


def test_a_version_holds_text_or_messages_never_both() -> None:
    assert VersionDoc(text="hi").text == "hi"
    with pytest.raises(ValidationError):
        VersionDoc(text="hi", messages=[{"role": "user", "text": "x"}])
    with pytest.raises(ValidationError):
        VersionDoc()
    with pytest.raises(ValidationError):
        VersionDoc(text="x", variables=[{"name": "a"}, {"name": "a"}])


def test_search_patterns_take_wildcards_literally() -> None:
    assert search_pattern("100%_x\\") == "%100\\%\\_x\\\\%"
    assert search_pattern("客服") == "%客服%" and search_pattern("ABC") == "%abc%"
    assert search_pattern("") is None


def test_variables_come_from_inputs_with_defaults_and_types() -> None:
    variables = [{"name": "topic"}, {"name": "tone", "required": False, "default": "soft"},
                 {"name": "n", "type": "integer", "required": False}]
    assert fill_variables("ask", variables, {"topic": "otters"}) == {"topic": "otters", "tone": "soft", "n": None}
    with pytest.raises(PermanentNodeError, match="'topic' is missing"):
        fill_variables("ask", variables, {})
    with pytest.raises(PermanentNodeError, match="'n' must be integer"):
        fill_variables("ask", variables, {"topic": "x", "n": True})


def test_the_diff_is_unified_and_names_the_versions() -> None:
    text = unified_diff("faq", (1, "a\nb\n", None), (2, None, [{"role": "user", "text": "a\nc"}]))
    assert text.startswith("--- faq@v1\n+++ faq@v2\n") and "+[user]\n" in text and "+c\n" in text


def test_latest_is_not_a_settable_label() -> None:
    with pytest.raises(InvalidInputs):
        check_label("latest")
    assert check_label("latest", settable=False) == "latest"


def test_a_reference_names_a_label_or_a_version_and_save_checks_it() -> None:
    with pytest.raises(ValidationError):
        PromptRef(key="k")
    with pytest.raises(ValidationError):
        PromptRef(key="k", label="production", version=1)
    refs = {"a": PromptRef(key="k", version=3), "b": PromptRef(key="k", label="staging"),
            "c": PromptRef(key="gone", label="latest"), "d": PromptRef(key="k", label="latest")}
    errors = missing_prompt_errors(refs, {"k": (2, frozenset({"production"}))})
    assert [(e["node_id"], e["field"]) for e in errors] == [
        ("a", "config.prompt.version"), ("b", "config.prompt.label"), ("c", "config.prompt.key")]


def test_official_prompts_filter_by_keyword() -> None:
    assert len(official_prompts()) == 6
    assert [p.id for p in official_prompts("json")] == [10005]
