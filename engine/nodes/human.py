"""Human-in-the-loop node types: `question` (a text or multiple-choice question) and `input`
(a form described by a JSON schema). No I/O here.

Both pause the run: the first attempt raises `Interrupt` with what to show the person; the
run becomes `interrupted` and holds no worker. `POST /v1/runs/{id}/resume` checks the answer
with `resume_outputs` (the same code the worker trusts), and the node's next claim finishes
with those outputs.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import Field, field_validator, model_validator

from engine.errors import InvalidInputs
from engine.nodes.base import Interrupt, NodeConfig, NodeContext, NodeType

MAX_ANSWER_CHARS = 100_000


class QuestionConfig(NodeConfig):
    """Config of a `question` node."""

    question: str = Field(min_length=1)
    answer_type: Literal["text", "option"] = "text"
    options: list[str] = Field(default_factory=list, max_length=50)
    # With options: whether an answer outside them is accepted (Coze's "other").
    allow_other: bool = False

    @model_validator(mode="after")
    def _options_match_answer_type(self) -> QuestionConfig:
        if self.answer_type == "option" and not self.options:
            raise ValueError("answer_type 'option' needs a non-empty 'options' list")
        if self.answer_type == "text" and self.options:
            raise ValueError("'options' are only used with answer_type 'option'")
        return self


class QuestionNode(NodeType[QuestionConfig]):
    """Asks a person a question; outputs `answer` (and `option_index` for multiple choice)."""

    type_name = "question"
    Config = QuestionConfig
    raw_fields: ClassVar[frozenset[str]] = frozenset({"question"})

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        """`answer` and `option_index`."""
        return frozenset({"answer", "option_index"})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Finish with the resumed answer, or ask."""
        if ctx.resume is not None:
            return ctx.resume
        raise Interrupt("question", {
            "question": ctx.render_text(self.config.question, inputs),
            "answer_type": self.config.answer_type,
            "options": list(self.config.options),
            "allow_other": self.config.allow_other,
        })

    @classmethod
    def resume_outputs(cls, asked: dict[str, Any], answer: Any) -> dict[str, Any]:
        """The outputs for `answer` (a string, or `{"answer": ...}` / `{"option_index": n}`)."""
        if isinstance(answer, dict):
            unknown = sorted(set(answer) - {"answer", "option_index"})
            if unknown:
                raise InvalidInputs(errors=[{"field": f"data.{unknown[0]}",
                                             "message": "unknown key; send 'answer' (or 'option_index')"}])
            if "option_index" in answer and "answer" not in answer:
                return _pick_option(asked, answer["option_index"])
            answer = answer.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            raise InvalidInputs(errors=[{"field": "data.answer", "message": "must be a non-empty string"}])
        if len(answer) > MAX_ANSWER_CHARS:
            raise InvalidInputs(errors=[{"field": "data.answer", "message": f"longer than {MAX_ANSWER_CHARS} characters"}])
        options: list[str] = list(asked.get("options") or [])
        if asked.get("answer_type") == "option":
            if answer in options:
                return {"answer": answer, "option_index": options.index(answer)}
            if not asked.get("allow_other"):
                raise InvalidInputs(errors=[{"field": "data.answer",
                                             "message": f"must be one of the options: {', '.join(options)}"}])
        return {"answer": answer, "option_index": None}


def _pick_option(asked: dict[str, Any], index: Any) -> dict[str, Any]:
    options: list[str] = list(asked.get("options") or [])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(options):
        raise InvalidInputs(errors=[{"field": "data.option_index",
                                     "message": f"must be an integer from 0 to {len(options) - 1}"}])
    return {"answer": options[index], "option_index": index}


class InputConfig(NodeConfig):
    """Config of an `input` node: what to ask for, as a JSON schema of an object."""

    prompt: str | None = None
    form: dict[str, Any] = Field(alias="schema")

    @field_validator("form")
    @classmethod
    def _is_object_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON schema: {exc.message}") from None
        if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
            raise ValueError("must describe an object: {type: object, properties: {...}}")
        return schema


class InputNode(NodeType[InputConfig]):
    """Asks a person to fill a form; the submitted object (validated) is the node's output."""

    type_name = "input"
    Config = InputConfig
    raw_fields: ClassVar[frozenset[str]] = frozenset({"prompt"})
    opaque_fields: ClassVar[frozenset[str]] = frozenset({"schema"})

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        """The form's properties."""
        assert isinstance(config, InputConfig)
        return frozenset(config.form.get("properties") or {})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Finish with the submitted form, or ask for it."""
        if ctx.resume is not None:
            return ctx.resume
        prompt = ctx.render_text(self.config.prompt, inputs) if self.config.prompt else None
        raise Interrupt("input", {"prompt": prompt, "schema": self.config.form})

    @classmethod
    def resume_outputs(cls, asked: dict[str, Any], answer: Any) -> dict[str, Any]:
        """The submitted object, if it satisfies the form's schema; else every problem, by field."""
        if not isinstance(answer, dict):
            raise InvalidInputs(errors=[{"field": "data", "message": "must be an object matching the form's schema"}])
        validator = Draft202012Validator(asked.get("schema") or {})
        problems = sorted(validator.iter_errors(answer), key=lambda e: list(map(str, e.absolute_path)))
        if problems:
            raise InvalidInputs(errors=[{"field": _where(e), "message": _say(e)} for e in problems])
        return answer


def _where(error: Any) -> str:
    path = ["data", *map(str, error.absolute_path)]
    if error.validator == "required":
        missing = re.match(r"'([^']*)'", error.message)
        if missing:
            path.append(missing.group(1))
    return ".".join(path)


def _say(error: Any) -> str:
    # jsonschema's messages repeat the submitted value; say what is wrong without echoing it
    if error.validator == "required":
        return "is required"
    if error.validator == "type":
        return f"must be of type {error.validator_value}"
    if error.validator == "enum":
        return f"must be one of {error.validator_value}"
    if error.validator == "additionalProperties":
        return "has fields the form does not declare"
    return f"fails the form's '{error.validator}' rule ({error.validator_value})"
