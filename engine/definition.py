"""The raw workflow definition document: parsing YAML/JSON and its pydantic models.

This module does no I/O. It checks the document's shape only (unknown keys are refused
everywhere); references, node types and the graph are checked by `engine.compiler`.
"""
from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import DefinitionError, InvalidInputs
from engine.nodes.base import NodeConfig
from engine.templates import RESERVED_NAMES, is_template

__all__ = [
    "IDENTIFIER", "VALUE_TYPES", "DefinitionLimits", "InputSpec", "NodeSpec", "RetrySpec", "ValueType",
    "WorkflowHeader", "WorkflowSpec", "apply_inputs", "load_definition", "pydantic_errors",
    "validate_config", "value_matches",
]

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
RetryOn = Literal["error", "timeout"]
RETRY_ON_ALL: tuple[RetryOn, ...] = ("error", "timeout")
ValueType = Literal["string", "integer", "number", "boolean", "object", "array", "any"]
VALUE_TYPES: tuple[str, ...] = get_args(ValueType)


def value_matches(type_name: str, value: Any) -> bool:
    """Whether `value` has the declared type (an int is not a boolean; a number may be an int)."""
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "boolean":
        return isinstance(value, bool)
    if type_name == "object":
        return isinstance(value, dict)
    if type_name == "array":
        return isinstance(value, list)
    return True


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Spec):
    """One declared run input."""

    type: ValueType = "any"
    required: bool = False
    default: Any = None
    description: str | None = None

    @property
    def has_default(self) -> bool:
        """Whether the document gave a default (even `null`)."""
        return "default" in self.model_fields_set

    @model_validator(mode="after")
    def _default_has_type(self) -> InputSpec:
        if self.has_default and self.default is not None and not value_matches(self.type, self.default):
            raise ValueError(f"default {self.default!r} is not of type {self.type}")
        return self


class RetrySpec(_Spec):
    """How often and how patiently a node is retried."""

    max_attempts: int = Field(default=1, ge=1, le=100)
    backoff_s: float = Field(default=1.0, ge=0)
    max_backoff_s: float = Field(default=60.0, ge=0)
    jitter: bool = True
    retry_on: list[RetryOn] = Field(default_factory=lambda: list(RETRY_ON_ALL))

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> RetrySpec:
        if self.max_backoff_s < self.backoff_s:
            raise ValueError("max_backoff_s must be at least backoff_s")
        return self


class NodeSpec(_Spec):
    """One node as written in the document."""

    id: str = Field(pattern=IDENTIFIER)
    type: str = Field(min_length=1)
    title: str | None = None
    description: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)
    after: list[str] = Field(default_factory=list)
    join: Literal["all", "any"] | None = None
    retry: RetrySpec | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    on_error: Literal["fail", "default", "branch"] = "fail"
    default_output: dict[str, Any] | None = None
    outputs: dict[str, ValueType] | None = None

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_NAMES:
            raise ValueError(f"'{value}' is a reserved name")
        return value

    @field_validator("inputs")
    @classmethod
    def _no_input_named_inputs(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Node inputs are visible at top level in the config's templates; they must not hide run inputs.
        if "inputs" in value:
            raise ValueError("a node input may not be named 'inputs'")
        return value

    @model_validator(mode="after")
    def _default_output_matches_on_error(self) -> NodeSpec:
        if self.on_error == "default" and self.default_output is None:
            raise ValueError("on_error: default needs a default_output")
        if self.on_error != "default" and self.default_output is not None:
            raise ValueError("default_output is only used with on_error: default")
        return self


class WorkflowHeader(_Spec):
    """Everything in the document except its nodes."""

    name: str | None = None
    description: str | None = None
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    deadline_s: float | None = Field(default=None, gt=0)

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, value: dict[str, InputSpec]) -> dict[str, InputSpec]:
        bad = [name for name in value if not re.match(IDENTIFIER, name)]
        if bad:
            raise ValueError(f"input names must be identifiers ({IDENTIFIER}): {', '.join(bad)}")
        return value


class WorkflowSpec(WorkflowHeader):
    """The whole document."""

    nodes: list[NodeSpec] = Field(min_length=1)


class _Loader(yaml.SafeLoader):
    """YAML without timestamps (dates stay strings so the document stays JSON) and without aliases.

    An alias repeats a subtree without its bytes: ten nested `*a` lists make a 463-byte
    document expand to megabytes once stored as JSON. Definitions are data, not programs:
    aliases (and `<<` merges, which use them) are refused.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Refuse an alias before PyYAML expands it."""
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise DefinitionError(f"YAML aliases are not allowed in definitions (*{event.anchor} on line {line}); "
                                  "write the value out", field="definition")
        return super().compose_node(parent, index)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class DefinitionLimits:
    """How big a saved definition may be (settings `definition_max_*`)."""

    max_bytes: int = 512 * 1024
    max_depth: int = 32
    max_nodes: int = 500

    @classmethod
    def from_settings(cls, settings: Any) -> DefinitionLimits:
        """The limits an engine.settings.Settings sets."""
        return cls(settings.definition_max_bytes, settings.definition_max_depth, settings.definition_max_nodes)


def _limit_error(message: str, field: str = "definition") -> DefinitionError:
    return DefinitionError(message, field=field)


def _depth_error(limit: int | None) -> DefinitionError:
    shown = f"{limit}" if limit is not None else "Python's recursion limit"
    return _limit_error(f"the definition is nested deeper than the limit of {shown} levels"
                        " (RELAYFLOW_DEFINITION_MAX_DEPTH)")


def _check_depth(doc: Any, limit: int) -> None:
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            raise _depth_error(limit)
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)


def _check_limits(doc: dict[str, Any], limits: DefinitionLimits) -> None:
    from engine.template_limits import json_size  # no cycle at import time: templates import this module's users

    _check_depth(doc, limits.max_depth)
    size = json_size(doc, limits.max_bytes)
    if size > limits.max_bytes:
        raise _limit_error(f"the definition is {size:,} bytes or more as JSON, over the limit of "
                           f"{limits.max_bytes:,} bytes (RELAYFLOW_DEFINITION_MAX_BYTES)")
    nodes = doc.get("nodes")
    if isinstance(nodes, list) and len(nodes) > limits.max_nodes:
        raise _limit_error(f"the definition has {len(nodes):,} nodes, over the limit of {limits.max_nodes:,}"
                           " (RELAYFLOW_DEFINITION_MAX_NODES)", field="nodes")


def load_definition(source: str | bytes | dict[str, Any], limits: DefinitionLimits | None = None) -> dict[str, Any]:
    """Parse a YAML or JSON document (or copy a dict) into a JSON-compatible dict.

    YAML aliases are always refused; `limits` (given where untrusted authors save) bound the
    size, nesting depth and node count, each a DefinitionError naming the limit.
    """
    if isinstance(source, str) and limits is not None and len(source) > limits.max_bytes:
        source = source.encode("utf-8")  # measured in bytes below
    if isinstance(source, bytes):
        if limits is not None and len(source) > limits.max_bytes:
            raise _limit_error(f"the definition is {len(source):,} bytes, over the limit of "
                               f"{limits.max_bytes:,} bytes (RELAYFLOW_DEFINITION_MAX_BYTES)")
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DefinitionError(f"the definition is not UTF-8: {exc}") from exc
    if isinstance(source, str):
        try:
            doc = json.loads(source)
        except RecursionError:
            raise _depth_error(limits.max_depth if limits else None) from None
        except ValueError:
            try:
                doc = yaml.load(source, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
            except yaml.YAMLError as exc:
                raise DefinitionError(f"the definition is neither valid YAML nor JSON: {exc}") from exc
            except RecursionError:
                raise _depth_error(limits.max_depth if limits else None) from None
    else:
        doc = source
    if not isinstance(doc, dict):
        raise DefinitionError("the definition must be a mapping (an object)")
    if limits is not None:
        _check_limits(doc, limits)
    problems: list[dict[str, Any]] = []
    try:
        plain: dict[str, Any] = _plain_json(doc, "", problems)  # a mapping in, a mapping out
    except RecursionError:
        raise _depth_error(limits.max_depth if limits else None) from None
    if problems:
        raise DefinitionError(errors=problems)
    return plain


def _plain_json(value: Any, path: str, problems: list[dict[str, Any]]) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                # YAML 1.1 reads `on:`/`yes:` as booleans and `1:` as an int.
                problems.append({"node_id": None, "field": path or None,
                                 "message": f"key {key!r} is not a string (quote it)"})
                continue
            out[key] = _plain_json(item, f"{path}.{key}" if path else key, problems)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain_json(item, f"{path}[{i}]", problems) for i, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        problems.append({"node_id": None, "field": path or None, "message": "NaN and infinity are not JSON"})
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    problems.append({"node_id": None, "field": path or None,
                     "message": f"a {type(value).__name__} is not a JSON value"})
    return None


def apply_inputs(specs: Mapping[str, InputSpec], given: dict[str, Any] | None) -> dict[str, Any]:
    """Apply defaults to run inputs and check them; raises InvalidInputs listing every problem."""
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise InvalidInputs(errors=[{"field": "inputs", "message": "inputs must be an object"}])
    errors = []
    result: dict[str, Any] = {}
    for key in given:
        if key not in specs:
            declared = ", ".join(sorted(specs)) or "none"
            errors.append({"field": f"inputs.{key}", "message": f"unknown input; declared: {declared}"})
    for key, spec in specs.items():
        if key in given and given[key] is not None:
            if not value_matches(spec.type, given[key]):
                errors.append({"field": f"inputs.{key}",
                               "message": f"expected {spec.type}, got {type(given[key]).__name__}"})
            result[key] = given[key]
        elif spec.has_default and spec.default is not None:
            result[key] = copy.deepcopy(spec.default)
        elif spec.required:
            errors.append({"field": f"inputs.{key}", "message": "required input is missing"})
        elif key in given or spec.has_default:
            result[key] = None
    if errors:
        raise InvalidInputs(errors=errors)
    return result


def validate_config(model: type[NodeConfig], raw: dict[str, Any], templated: set[str], *,
                    node_id: str) -> tuple[NodeConfig | None, list[dict[str, Any]]]:
    """Validate a node's config, accepting a template string in a `templated` field wherever a value is due."""
    try:
        return model.model_validate(raw), []
    except ValidationError as exc:
        # A template string stands for a value of the right type, known only once rendered.
        # An unknown key is wrong whatever its value: a template there is no excuse.
        real = [e for e in exc.errors(include_url=False) if e["type"] == "extra_forbidden" or not (
            e["loc"] and e["loc"][0] in templated and _is_template_at(raw, e["loc"]))]
        if real:
            return None, pydantic_errors(real, model, node_id=node_id, prefix="config")
    rest = {k: v for k, v in raw.items() if k not in templated}
    try:
        base = model.model_validate(rest)
    except ValidationError:
        base = model.model_construct(**rest)  # a templated field is required: no validated base exists
    # This config answers ports/output_fields at compile time; the real one is validated once rendered.
    return base.model_copy(update={k: raw[k] for k in templated}), []


def _is_template_at(value: Any, loc: tuple[Any, ...]) -> bool:
    for part in loc:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            return False
    return isinstance(value, str) and is_template(value)


def pydantic_errors(exc: ValidationError | list[Any], model: type[BaseModel], *,
                    node_id: str | None = None, prefix: str = "") -> list[dict[str, Any]]:
    """Turn a pydantic ValidationError (or its error list) into `{node_id, field, message}` entries."""
    errors = []
    details = exc.errors(include_url=False) if isinstance(exc, ValidationError) else exc
    for err in details:
        loc = err["loc"]
        field = _field_path(prefix, loc)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            message = f"unknown {'config ' if prefix == 'config' else ''}key '{loc[-1]}'"
            if allowed is not None:
                message += f"; allowed keys: {', '.join(sorted(allowed))}"
        errors.append({"node_id": node_id, "field": field, "message": message})
    return errors


def _field_path(prefix: str, loc: tuple[int | str, ...]) -> str | None:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path or None


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> set[str] | None:
    """The keys the model at `loc` (under `model`) accepts, following field annotations."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        if isinstance(part, str) and part in current.model_fields:
            current = _inner_model(current.model_fields[part].annotation)
        # list indexes and dict keys keep the model found by the field annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return set(current.model_fields)
    return None


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None

