"""What a prompt version holds, checked; filling its variables; the diff of two versions. No I/O.

A version holds either `text` or chat `messages` (role + text), typed `variables` (name, type,
required, default), an optional `model` config and a commit `message`. Texts are templates in
the workflow syntax (`{{ name }}`); a node renders them with its inputs.
"""
from __future__ import annotations

import difflib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.errors import InvalidInputs

KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
LATEST = "latest"  # moves by itself: never set by hand
PRODUCTION = "production"
TEXT_MAX_CHARS = 200_000
VariableType = Literal["string", "number", "integer", "boolean", "object", "array"]
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,), "object": (dict,),
    "array": (list,)}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variable(_Strict):
    """A variable the prompt's text uses."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    type: VariableType = "string"
    required: bool = True
    default: Any = None
    description: str = Field(default="", max_length=1000)


class Message(_Strict):
    """One chat message of a prompt."""

    role: Literal["system", "user", "assistant"]
    text: str = Field(max_length=TEXT_MAX_CHARS)


class ModelConfig(_Strict):
    """The model a prompt was written for (advisory: the node's own `model` answers)."""

    model: str = Field(min_length=1, max_length=128)
    parameters: dict[str, Any] = Field(default_factory=dict)


class VersionDoc(_Strict):
    """The content of one version: `text` or `messages`, never both."""

    text: str | None = Field(default=None, max_length=TEXT_MAX_CHARS)
    messages: list[Message] | None = Field(default=None, min_length=1, max_length=100)
    variables: list[Variable] = Field(default_factory=list, max_length=100)
    model: ModelConfig | None = None
    message: str = Field(default="", max_length=2000, description="the commit message")

    @model_validator(mode="after")
    def _one_body(self) -> VersionDoc:
        if (self.text is None) == (self.messages is None):
            raise ValueError("give either `text` or `messages` (role + text), not both")
        names = [v.name for v in self.variables]
        if len(set(names)) != len(names):
            raise ValueError("variable names must be distinct")
        return self

    def stored(self) -> dict[str, Any]:
        """The columns of prompt_versions."""
        return {"text": self.text, "messages": [m.model_dump() for m in self.messages] if self.messages else None,
                "variables": [v.model_dump() for v in self.variables],
                "model": self.model.model_dump() if self.model else None, "message": self.message}

    def same_content(self, text: str | None, messages: list[Any] | None, variables: list[Any],
                     model: dict[str, Any] | None) -> bool:
        """Whether a stored version holds the same content (a push of an unchanged file saves nothing)."""
        mine = self.stored()
        return (mine["text"], mine["messages"], mine["variables"], mine["model"]) == (text, messages, variables, model)


def check_key(key: str) -> str:
    """A prompt key: 1-128 letters, digits, `_`, `.` or `-`, starting with a letter or digit."""
    if not KEY.fullmatch(key):
        raise InvalidInputs(errors=[{"field": "key", "message": f"'{key}' is not a prompt key; use 1-128 letters, "
                                                                "digits, '_', '.' or '-', starting with a letter or digit"}])
    return key


def check_label(label: str, settable: bool = True) -> str:
    """A label name (`latest` moves by itself and is not `settable`)."""
    if not LABEL.fullmatch(label):
        raise InvalidInputs(errors=[{"field": "label", "message": f"'{label}' is not a label; use 1-64 letters, digits, "
                                                                  "'_', '.' or '-'"}])
    if settable and label == LATEST:
        raise InvalidInputs(errors=[{"field": "label", "message": "'latest' always points at the newest version "
                                                                  "and cannot be moved"}])
    return label


def search_text(key: str, name: str, description: str, text: str | None, messages: list[Any] | None) -> str:
    """The lower-cased text a search matches: key, name, description and the version's text."""
    body = text if text is not None else "\n".join(str(m.get("text", "")) for m in messages or [])
    return "\n".join((key, name, description, body)).lower()


def search_pattern(query: str | None) -> str | None:
    """`LIKE` pattern finding `query` anywhere (case-insensitive; `%`, `_` and `\\` taken literally)."""
    if not query:
        return None
    escaped = query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def fill_variables(node_id: str, variables: list[dict[str, Any]], inputs: dict[str, Any]) -> dict[str, Any]:
    """The prompt's variables taken from a node's inputs (defaults for the missing optional ones).

    A missing required variable, or a value of the wrong type, is a PermanentNodeError naming it.
    """
    from engine.errors import PermanentNodeError

    values: dict[str, Any] = {}
    for variable in variables:
        name, kind = variable["name"], variable.get("type", "string")
        if name not in inputs or inputs[name] is None:
            if variable.get("required", True) and variable.get("default") is None:
                raise PermanentNodeError(f"Node {node_id}: the prompt's required variable '{name}' is missing "
                                         "from the node's inputs.", node_id=node_id, field=f"inputs.{name}")
            values[name] = variable.get("default")
            continue
        value = inputs[name]
        allowed = _PYTHON_TYPES.get(kind, (object,))
        if not isinstance(value, allowed) or (kind != "boolean" and isinstance(value, bool)):
            raise PermanentNodeError(f"Node {node_id}: the prompt's variable '{name}' must be {kind}, "
                                     f"got {type(value).__name__}.", node_id=node_id, field=f"inputs.{name}")
        values[name] = value
    return values


def as_lines(text: str | None, messages: list[Any] | None) -> list[str]:
    """A version's text (or its messages, each under its role) as lines for a diff."""
    if text is not None:
        return text.splitlines(keepends=True)
    lines: list[str] = []
    for message in messages or []:
        lines.append(f"[{message['role']}]\n")
        lines.extend(str(message["text"]).splitlines(keepends=True))
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
    return lines


def unified_diff(key: str, old: tuple[int, str | None, list[Any] | None],
                 new: tuple[int, str | None, list[Any] | None]) -> str:
    """The unified diff of two versions' text or messages (`--- KEY@v1` / `+++ KEY@v2`)."""
    return "".join(difflib.unified_diff(as_lines(old[1], old[2]), as_lines(new[1], new[2]),
                                        fromfile=f"{key}@v{old[0]}", tofile=f"{key}@v{new[0]}"))


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Which of variables and model differ between two stored versions."""
    return [f for f in ("variables", "model") if json.dumps(old.get(f), sort_keys=True) != json.dumps(new.get(f), sort_keys=True)]
