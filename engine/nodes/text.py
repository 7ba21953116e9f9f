"""The `text` node (Coze Studio's TextProcessor): concatenate with a template, or split by delimiters.

No I/O. The template renders in the engine's bounded sandbox; a split is bounded by the same
character limit (`RELAYFLOW_TEMPLATE_MAX_CHARS`) as anything a template builds.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from engine.errors import PermanentNodeError
from engine.nodes.base import NodeConfig, NodeContext, NodeType
from engine.template_limits import limits


class TextConfig(NodeConfig):
    """Config of a `text` node: `concat` needs `template`; `split` needs `text` and `delimiters`."""

    mode: Literal["concat", "split"]
    template: str | None = Field(default=None, description="concat: the text, with the node's inputs in scope")
    array_item_concat_char: str = Field(default=", ", max_length=64,
                                        description="concat: joins the items of an input that is a list")
    text: Any = Field(default=None, description="split: the string to split (usually a reference)")
    delimiters: list[str] = Field(default_factory=list, max_length=32, description="split: where to cut")

    @model_validator(mode="after")
    def _fields_of_the_mode(self) -> TextConfig:
        if self.mode == "concat":
            if self.template is None:
                raise ValueError("mode 'concat' needs 'template'")
            if self.delimiters or self.text is not None:
                raise ValueError("'text' and 'delimiters' belong to mode 'split'")
        else:
            if not self.delimiters or any(d == "" for d in self.delimiters):
                raise ValueError("mode 'split' needs 'delimiters': one or more non-empty strings")
            if self.template is not None:
                raise ValueError("'template' belongs to mode 'concat'")
        return self


class TextNode(NodeType[TextConfig]):
    """Outputs `output`: the concatenated string, or the list of pieces."""

    type_name = "text"
    pure = True
    Config = TextConfig
    raw_fields: ClassVar[frozenset[str]] = frozenset({"template"})

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        """Always `output`."""
        return frozenset({"output"})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Concatenate or split."""
        cfg = self.config
        if cfg.mode == "concat":
            assert cfg.template is not None
            joined = {name: _join(value, cfg.array_item_concat_char) for name, value in inputs.items()}
            return {"output": ctx.render_text(cfg.template, joined)}
        return {"output": split(ctx.node_id, cfg.text, cfg.delimiters)}


def _join(value: Any, char: str) -> Any:
    if not isinstance(value, list):
        return value
    return char.join(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in value)


def split(node_id: str, text: Any, delimiters: list[str]) -> list[str]:
    """`text` cut at every occurrence of any delimiter (longest first); empty pieces are kept, as in Coze."""
    if text is None:
        return []
    if isinstance(text, (list, dict)):
        raise PermanentNodeError(f"Node {node_id}: config.text must be a string to split, got "
                                 f"{'a list' if isinstance(text, list) else 'an object'}.", node_id=node_id,
                                 field="config.text")
    source = text if isinstance(text, str) else json.dumps(text)
    limit = limits().max_chars
    if len(source) > limit:
        raise PermanentNodeError(f"Node {node_id}: the text to split has {len(source):,} characters, over the "
                                 f"limit of {limit:,} (RELAYFLOW_TEMPLATE_MAX_CHARS).", node_id=node_id,
                                 field="config.text")
    pattern = "|".join(re.escape(d) for d in sorted(set(delimiters), key=len, reverse=True))
    return re.split(pattern, source)
