"""The nodes only a `loop` node's body may hold (Coze's LoopSetVariable, Break and Continue).

Pure: no I/O. Each one only records, in its outputs, what the loop node reads once the iteration
has ended (engine/nodes/loop.py): the body is a graph, not a list of statements, so none of them
stops the iteration's other nodes. Anywhere else they are refused at save time (`only_inside`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from engine.nodes.base import NodeConfig, NodeContext, NodeType


class SetVariableConfig(NodeConfig):
    """Config of a `set_variable` node: loop variable name -> its value for the next iteration."""

    values: dict[str, Any] = Field(min_length=1)


class SetVariableNode(NodeType[SetVariableConfig]):
    """Outputs the (rendered) `values`; the loop applies them to its variables when the iteration ends."""

    type_name = "set_variable"
    Config = SetVariableConfig
    only_inside = "loop"

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        assert isinstance(config, SetVariableConfig)
        return frozenset(config.values)

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """The values, as rendered."""
        return dict(self.config.values)


class FlagConfig(NodeConfig):
    """`break` and `continue` take no config."""


class _FlagNode(NodeType[FlagConfig]):
    """A body-only node whose one output, `{flag: true}`, the woken loop reads."""

    Config = FlagConfig
    only_inside = "loop"
    flag: ClassVar[str]

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        return frozenset({cls.flag})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Record the flag."""
        return {self.flag: True}


class BreakNode(_FlagNode):
    """When it runs, the loop ends after this iteration (which completes, outputs and variables kept)."""

    type_name = "break"
    flag = "break"


class ContinueNode(_FlagNode):
    """When it runs, this iteration is left out of the loop's output arrays; the loop goes on."""

    type_name = "continue"
    flag = "continue"
