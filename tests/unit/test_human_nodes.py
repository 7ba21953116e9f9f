"""Question and input nodes: what they ask and which answers they accept (no I/O)."""
from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from engine.errors import InvalidInputs
from engine.nodes.base import Interrupt, NodeContext
from engine.nodes.human import InputConfig, InputNode, QuestionConfig, QuestionNode
from engine.settings import Settings

FORM = {"type": "object", "required": ["name"],
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}}


def _ctx(resume: dict[str, Any] | None = None) -> NodeContext:
    return NodeContext(run_id="r", node_id="n", attempt=1, timeout_s=5, settings=Settings(),
                       render_text=lambda text, extra: text.replace("{{ who }}", str(extra.get("who"))), resume=resume)


def test_a_question_interrupts_with_its_rendered_text_then_finishes_with_the_answer() -> None:
    node = QuestionNode(QuestionConfig(question="Hello {{ who }}?"))
    with pytest.raises(Interrupt) as asked:
        node.run(_ctx(), {"who": "Ada"})
    assert asked.value.kind == "question" and asked.value.data["question"] == "Hello Ada?"
    assert node.run(_ctx({"answer": "hi", "option_index": None}), {}) == {"answer": "hi", "option_index": None}


def test_option_answers_are_matched_by_text_or_index_and_others_refused() -> None:
    asked = {"answer_type": "option", "options": ["red", "blue"], "allow_other": False}
    assert QuestionNode.resume_outputs(asked, "blue") == {"answer": "blue", "option_index": 1}
    assert QuestionNode.resume_outputs(asked, {"option_index": 0}) == {"answer": "red", "option_index": 0}
    with pytest.raises(InvalidInputs) as wrong:
        QuestionNode.resume_outputs(asked, "green")
    assert wrong.value.errors[0]["field"] == "data.answer"
    with pytest.raises(InvalidInputs):
        QuestionNode.resume_outputs(asked, {"option_index": 2})
    assert QuestionNode.resume_outputs({**asked, "allow_other": True}, "green") == {"answer": "green",
                                                                                    "option_index": None}


def test_empty_or_non_text_answers_are_refused() -> None:
    for bad in ("", "   ", 3, None, {"answer": ""}, {"colour": "x"}):
        with pytest.raises(InvalidInputs):
            QuestionNode.resume_outputs({"answer_type": "text"}, bad)


def test_option_questions_need_options() -> None:
    with pytest.raises(ValidationError):
        QuestionConfig(question="pick", answer_type="option")
    with pytest.raises(ValidationError):
        QuestionConfig(question="say", options=["a"])


def test_a_form_accepts_data_matching_its_schema_and_names_every_bad_field() -> None:
    asked = {"schema": FORM}
    assert InputNode.resume_outputs(asked, {"name": "Ada", "age": 36}) == {"name": "Ada", "age": 36}
    with pytest.raises(InvalidInputs) as bad:
        InputNode.resume_outputs(asked, {"age": -1})
    fields = {e["field"]: e["message"] for e in bad.value.errors}
    assert fields == {"data.name": "is required", "data.age": "fails the form's 'minimum' rule (0)"}
    with pytest.raises(InvalidInputs):
        InputNode.resume_outputs(asked, ["not", "an", "object"])


def test_a_form_schema_must_be_a_valid_object_schema() -> None:
    for bad in ({"type": "string"}, {"type": "object", "properties": {"a": {"type": "nope"}}}):
        with pytest.raises(ValidationError):
            InputConfig.model_validate({"schema": bad})
    config = InputConfig.model_validate({"schema": FORM})
    assert InputNode.output_fields(config, None) == frozenset({"name", "age"})
