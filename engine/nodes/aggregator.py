"""The `aggregator` node (Coze Studio's VariableAggregator): first non-null value per group."""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from engine.errors import PermanentNodeError
from engine.nodes.base import NodeConfig, NodeContext, NodeType


class AggregatorConfig(NodeConfig):
    """`aggregator` takes no config: its groups are its inputs."""


class AggregatorNode(NodeType[AggregatorConfig]):
    """Merges the branches of a selector: per input group, the first value that is not null.

    Each input is a group: a list of candidate values, usually references to the same output
    on different branches, e.g. `{"values": ["{{a.text}}", "{{b.text}}"]}`. References to
    skipped nodes are null, so the value of the branch that ran wins. The output has one key
    per group: the group `values` is output as `value`, any other group under its own name
    (`{"answer": [...]}` → `{"answer": ...}`). A group whose values are all null outputs null.
    The node runs when at least one incoming edge is active (`join = "any"`).
    """

    type_name = "aggregator"
    pure = True
    Config = AggregatorConfig
    join: ClassVar[Literal["all", "any"]] = "any"

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Pick the first non-null value of every group."""
        outputs: dict[str, Any] = {}
        for group, candidates in inputs.items():
            if not isinstance(candidates, list):
                raise PermanentNodeError(
                    f"aggregator: input {group!r} must be a list of candidate values, "
                    f"got {type(candidates).__name__}"
                )
            key = "value" if group == "values" else group
            if key in outputs:
                raise PermanentNodeError("aggregator: inputs 'values' and 'value' would both output 'value'")
            outputs[key] = next((v for v in candidates if v is not None), None)
        return outputs
