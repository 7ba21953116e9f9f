"""The `variable_aggregator` node (Coze Studio's VariableAggregator, `mergeGroups`). No I/O.

Each group lists candidate variables, usually the same value on different branches; the
group's output is the first that is not null. A reference to a node that was skipped renders
as null, so after a selector or an intent the branch that ran wins. The node runs when at
least one incoming edge is active (`join = "any"`), however many of its sources were skipped.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from engine.nodes.base import NodeConfig, NodeContext, NodeType


class Group(NodeConfig):
    """One output: `name` takes the first non-null of `variables`, in order."""

    name: str
    variables: list[Any] = Field(min_length=1, max_length=100)

    @field_validator("name")
    @classmethod
    def _identifier(cls, name: str) -> str:
        if not name.isidentifier():
            raise ValueError(f"group name {name!r} must be an identifier (letters, digits, _)")
        return name


class VariableAggregatorConfig(NodeConfig):
    """Config of a `variable_aggregator` node."""

    groups: list[Group] = Field(min_length=1, max_length=50)

    @field_validator("groups")
    @classmethod
    def _distinct(cls, groups: list[Group]) -> list[Group]:
        names = [g.name for g in groups]
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise ValueError(f"group name {twice!r} is used twice")
        return groups


class VariableAggregatorNode(NodeType[VariableAggregatorConfig]):
    """Outputs one key per group: its first non-null variable (null when all are)."""

    type_name = "variable_aggregator"
    pure = True
    Config = VariableAggregatorConfig
    join: ClassVar[Literal["all", "any"]] = "any"

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        """The group names."""
        assert isinstance(config, VariableAggregatorConfig)
        return frozenset(g.name for g in config.groups)

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """The first non-null variable of every group."""
        return {g.name: next((v for v in g.variables if v is not None), None) for g in self.config.groups}
