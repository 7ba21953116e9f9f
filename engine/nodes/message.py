"""The `message` node (Coze Studio's OutputEmitter, "Message"/"Output"): an intermediate message. No I/O.

It renders `content` and outputs it as `output`. The executor records the content with the
node's `node.succeeded` event (`data.message`), in the transaction that commits the node: the
message is in the run's stream exactly once, and only if the node succeeded. The Coze stream
routes send it as a `Message` event of this node, as Coze does for its Message node.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from engine.nodes.base import NodeConfig, NodeContext, NodeType


class MessageConfig(NodeConfig):
    """Config of a `message` node."""

    content: str = Field(min_length=1, description="the message, a template with the node's inputs in scope")


class MessageNode(NodeType[MessageConfig]):
    """Outputs `output`: the rendered message, also recorded as the run's stream message."""

    type_name = "message"
    pure = True
    Config = MessageConfig
    raw_fields: ClassVar[frozenset[str]] = frozenset({"content"})
    event_output: ClassVar[str | None] = "output"

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        """Always `output`."""
        return frozenset({"output"})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Render the message."""
        return {"output": ctx.render_text(self.config.content, inputs)}
