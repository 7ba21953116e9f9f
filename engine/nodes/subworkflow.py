"""The `workflow` node: runs another workflow of the same space as a child run.

Its first attempt starts the child through `ctx.children` and waits for it holding no worker
(`WaitForChildren`); the child's end queues the node again with the child's outcome in
`ctx.resume`, and that same attempt finishes with the child's outputs, or fails (then the
node's `retry` starts a new child, and `on_error` applies as for any node).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from engine.errors import NodeError, PermanentNodeError
from engine.nodes.base import NodeConfig, NodeContext, NodeType, WaitForChildren


class WorkflowConfig(NodeConfig):
    """Config of a `workflow` node: the workflow (id or name, same space) and optionally its version."""

    workflow: str = Field(min_length=1)
    # Without it: the published version, else the latest, resolved when the node first starts a
    # child; every later attempt of the node (a retry) runs that same version.
    version: int | None = Field(default=None, ge=1)


class SubWorkflowNode(NodeType[WorkflowConfig]):
    """Runs `workflow` with the node's `inputs` as the child run's inputs; outputs are the child's outputs."""

    type_name = "workflow"
    Config = WorkflowConfig

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        """The declared outputs if any, else any (the child's outputs)."""
        return frozenset(declared) if declared else None

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Start the child run, or finish with its outcome once it ended."""
        outcome = ctx.resume
        if outcome is not None and "child_run_id" in outcome:
            child, status = outcome["child_run_id"], outcome.get("status")
            if status == "succeeded":
                return dict(outcome.get("outputs") or {})
            why = (outcome.get("error") or {}).get("message") or "no error given"
            message = f"Node {ctx.node_id}: child run {child} of workflow {self.config.workflow} {status}: {why}"
            if status == "cancelled":
                raise PermanentNodeError(message, node_id=ctx.node_id, child_run_id=child)
            raise NodeError(message, node_id=ctx.node_id, child_run_id=child)
        if ctx.children is None:
            raise PermanentNodeError(f"Node {ctx.node_id}: child runs cannot be started here.", node_id=ctx.node_id)
        child_run_id = ctx.children.start(self.config.workflow, self.config.version, inputs)
        raise WaitForChildren([child_run_id])
