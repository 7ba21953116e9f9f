"""Form fields to values: a run form built from a workflow's declared inputs, and the answer form of
a question or input node built from its options or JSON schema. No I/O.

Every problem is collected as `{field, message}` (the engine's InvalidInputs shape), so a form is
shown again with each field's error next to it.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidInputs

FORM_PREFIX = "in."  # form field names: `in.<input name>` (never clashes with `csrf`)


@dataclass(frozen=True)
class Field:
    """One field of a generated form."""

    name: str
    kind: str  # text | number | integer | boolean | json | select | textarea
    required: bool
    value: str
    description: str = ""
    options: tuple[str, ...] = ()


def input_fields(inputs: Mapping[str, Any]) -> list[Field]:
    """The run form's fields from the workflow's declared inputs (engine.definition.InputSpec)."""
    fields: list[Field] = []
    for name, spec in inputs.items():
        kind = {"string": "text", "number": "number", "integer": "integer", "boolean": "boolean"}.get(spec.type, "json")
        default = spec.default if spec.has_default else None
        if default is None:
            shown = ""
        elif kind == "json":
            shown = json.dumps(default, ensure_ascii=False)
        else:
            shown = str(default).lower() if kind == "boolean" else str(default)
        fields.append(Field(name, kind, spec.required, shown, spec.description or ""))
    return fields


def _value(kind: str, raw: str, field: str, problems: list[dict[str, Any]]) -> Any:
    if kind == "text":
        return raw
    if kind == "boolean":
        return raw in ("true", "on", "1")
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
        return json.loads(raw)
    except ValueError:
        message = {"integer": "must be a whole number", "number": "must be a number"}.get(kind, "must be JSON")
        problems.append({"field": field, "message": message})
        return None


def parse_inputs(fields: list[Field], form: Mapping[str, str]) -> dict[str, Any]:
    """The run inputs from a submitted run form; blank optional fields are left out (their default applies)."""
    inputs: dict[str, Any] = {}
    problems: list[dict[str, Any]] = []
    for field in fields:
        raw = form.get(FORM_PREFIX + field.name, "")
        if field.kind != "boolean" and not raw.strip():
            continue  # the engine says which required ones are missing
        inputs[field.name] = _value(field.kind, raw, field.name, problems)
    if problems:
        raise InvalidInputs(errors=problems)
    return inputs


def answer_fields(interrupt: Mapping[str, Any]) -> list[Field]:
    """The answer form of a pending interrupt: a question's options or text, an input node's schema."""
    data = interrupt.get("data") or {}
    if interrupt.get("type") == "question":
        if data.get("answer_type") == "option" and not data.get("allow_other"):
            return [Field("answer", "select", True, "", "", tuple(data.get("options") or ()))]
        return [Field("answer", "textarea", True, "")]
    schema = data.get("schema") or {}
    required = set(schema.get("required") or ())
    fields = []
    for name, prop in (schema.get("properties") or {}).items():
        kind = {"string": "text", "number": "number", "integer": "integer", "boolean": "boolean"}.get(
            prop.get("type"), "json")
        if prop.get("enum") and kind == "text":
            fields.append(Field(name, "select", name in required, "", prop.get("description", ""),
                                tuple(str(v) for v in prop["enum"])))
            continue
        fields.append(Field(name, kind, name in required, "", prop.get("description", "")))
    return fields


def parse_answer(interrupt: Mapping[str, Any], form: Mapping[str, str]) -> Any:
    """The resume data from a submitted answer form."""
    if interrupt.get("type") == "question":
        return form.get(FORM_PREFIX + "answer", "")
    problems: list[dict[str, Any]] = []
    answer: dict[str, Any] = {}
    for field in answer_fields(interrupt):
        raw = form.get(FORM_PREFIX + field.name, "")
        if field.kind != "boolean" and not raw.strip():
            continue  # the schema says whether it was required
        value = _value("text" if field.kind == "select" else field.kind, raw, f"data.{field.name}", problems)
        answer[field.name] = value
    if problems:
        raise InvalidInputs(errors=problems)
    return answer
