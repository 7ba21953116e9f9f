"""The `json_parse` and `json_serialize` nodes: text to value and back."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from engine.errors import PermanentNodeError
from engine.nodes.base import NodeConfig, NodeContext, NodeType


class JsonParseConfig(NodeConfig):
    """`json_parse` takes no config: its input `text` is the JSON to parse."""


class JsonParseNode(NodeType[JsonParseConfig]):
    """Parses input `text` (a JSON string) and outputs `{"value": parsed}`."""

    type_name = "json_parse"
    pure = True
    Config = JsonParseConfig

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        """Always `value`."""
        return frozenset({"value"})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Parse `inputs["text"]`."""
        if "text" not in inputs:
            raise PermanentNodeError("json_parse: missing input 'text'")
        text = inputs["text"]
        if not isinstance(text, str):
            raise PermanentNodeError(f"json_parse: input 'text' must be a string, got {type(text).__name__}")
        try:
            return {"value": json.loads(text)}
        except json.JSONDecodeError as exc:
            raise PermanentNodeError(
                f"json_parse: input 'text' is not valid JSON: {exc.msg} at line {exc.lineno} "
                f"column {exc.colno} (char {exc.pos})"
            ) from exc


class JsonSerializeConfig(NodeConfig):
    """`json_serialize` takes no config: its input `value` is what to serialise."""


class JsonSerializeNode(NodeType[JsonSerializeConfig]):
    """Serialises input `value` and outputs `{"text": json}` (UTF-8, not ASCII-escaped)."""

    type_name = "json_serialize"
    pure = True
    Config = JsonSerializeConfig

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        """Always `text`."""
        return frozenset({"text"})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Serialise `inputs["value"]`."""
        if "value" not in inputs:
            raise PermanentNodeError("json_serialize: missing input 'value'")
        try:
            # allow_nan=False: NaN/Infinity would produce text other JSON parsers reject.
            return {"text": json.dumps(inputs["value"], ensure_ascii=False, allow_nan=False)}
        except (TypeError, ValueError) as exc:
            raise PermanentNodeError(f"json_serialize: input 'value' is not JSON-serialisable: {exc}") from exc
