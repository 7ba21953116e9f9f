"""The `template` node: renders a text template against the run and the node's inputs."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from engine.nodes.base import NodeConfig, NodeContext, NodeType


class TemplateConfig(NodeConfig):
    """Config of a `template` node."""

    template: str


class TemplateNode(NodeType[TemplateConfig]):
    """Renders `template` with the node's inputs as top-level variables; outputs `{"text"}`."""

    type_name = "template"
    pure = True
    Config = TemplateConfig
    # The node renders the template itself so that its own inputs are in scope.
    raw_fields: ClassVar[frozenset[str]] = frozenset({"template"})

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        """Always `text`."""
        return frozenset({"text"})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Render the template and return it as `text`."""
        return {"text": ctx.render_text(self.config.template, inputs)}
