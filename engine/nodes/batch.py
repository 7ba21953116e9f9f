"""The `batch` node (Coze's Batch, Dify's Iteration in parallel): runs an inline body once per item.

Each item is a child run of the node's body (same version as the run), inserted when the node
starts; at most `concurrency` run at once, and each child's end starts the next in the same
transaction, so the node's own state per finished item is a counter. The node waits holding no
worker; when the last item ends (or, with `on_item_error: fail`, the first that fails) it is
queued again and this same attempt gathers every item's outputs once, in item order.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from engine.errors import NodeError, PermanentNodeError
from engine.nodes.base import OUTER_KEY, ChildOutcome, NodeConfig, NodeContext, NodeType, WaitForChildren

ITEM_ERRORS = "errors"  # the output listing failed items (`on_item_error: continue`)


class BatchConfig(NodeConfig):
    """Config of a `batch` node: the items, the body and how items run."""

    # The array to map over; usually a template such as "{{ inputs.docs }}".
    items: list[Any]
    concurrency: int = Field(default=10, ge=1, le=1000)  # Coze's default is 10
    # At most this many items (refused above); RELAYFLOW_BATCH_MAX_ITEMS caps it.
    max_items: int | None = Field(default=None, ge=1)
    # fail: the first failed item fails the node and cancels the live items; continue: a failed
    # item's outputs are null and it is listed in `errors`; drop: failed items are left out.
    on_item_error: Literal["fail", "continue", "drop"] = "fail"
    nodes: list[dict[str, Any]] = Field(min_length=1)  # the body: a graph that sees item, index and the node's inputs
    outputs: dict[str, Any] = Field(default_factory=dict)  # each item's outputs, rendered from the body's nodes


class BatchNode(NodeType[BatchConfig]):
    """Maps the body over `items`; each output of the body becomes an array in item order."""

    type_name = "batch"
    Config = BatchConfig
    opaque_fields = frozenset({"nodes", "outputs"})  # compiled as the body, not rendered by the engine
    body_field = "nodes"
    body_locals = frozenset({"item", "index"})

    @classmethod
    def body_inputs(cls, config: NodeConfig, input_names: frozenset[str]) -> dict[str, str]:
        """Each item's child run gets `item`, `index` and the batch node's own inputs."""
        return {"item": "any", "index": "integer", **dict.fromkeys(sorted(input_names - {OUTER_KEY}), "any")}

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        assert isinstance(config, BatchConfig)
        return frozenset(config.outputs) | {ITEM_ERRORS}

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Start the items, or gather their outputs once they ended."""
        outcome = ctx.resume
        if ctx.children is None:
            raise PermanentNodeError(f"Node {ctx.node_id}: child runs cannot be started here.", node_id=ctx.node_id)
        if outcome is not None and "child_run_id" in outcome:
            return self._gather(ctx, str(outcome["child_run_id"]))
        items = self.config.items
        limit = min(self.config.max_items or ctx.settings.batch_max_items, ctx.settings.batch_max_items)
        if len(items) > limit:
            raise PermanentNodeError(
                f"Node {ctx.node_id}: {len(items):,} items, over the limit of {limit:,} "
                f"({'config.max_items' if limit == self.config.max_items else 'RELAYFLOW_BATCH_MAX_ITEMS'}).",
                node_id=ctx.node_id, field="config.items")
        if not items:
            return self._outputs([])
        ctx.children.start_items(items, inputs, self.config.concurrency, self.config.on_item_error == "fail")
        raise WaitForChildren([])

    def _gather(self, ctx: NodeContext, child_run_id: str) -> dict[str, Any]:
        assert ctx.children is not None
        ended = ctx.children.outcomes(child_run_id)
        failed = [o for o in ended if o.status != "succeeded"]
        if self.config.on_item_error == "fail" and failed:
            # The item that failed, not a sibling cancelled because of it: with fail-fast, a lower
            # item can be cancelled before this node gathers, and naming it would hide the cause.
            first = min((o for o in failed if o.status not in ("queued", "running", "interrupted")),
                        key=lambda o: (o.status == "cancelled", o.index), default=failed[0])
            cancelled = ctx.children.cancel_rest(child_run_id)
            why = (first.error or {}).get("message") or "no error given"
            message = (f"Node {ctx.node_id}: item {first.index} (child run {first.run_id}) {first.status}: {why}"
                       + (f"; {cancelled} live item(s) cancelled" if cancelled else ""))
            raise NodeError(message, node_id=ctx.node_id, item_index=first.index, child_run_id=first.run_id)
        return self._outputs(ended)

    def _outputs(self, ended: list[ChildOutcome]) -> dict[str, Any]:
        """Arrays in item order: a failed item is null (`continue`) or left out (`drop`)."""
        keep = [o for o in ended if o.status == "succeeded" or self.config.on_item_error == "continue"]
        outputs: dict[str, Any] = {key: [(o.outputs or {}).get(key) if o.status == "succeeded" else None
                                         for o in keep] for key in self.config.outputs}
        outputs[ITEM_ERRORS] = [{"index": o.index, "run_id": o.run_id, "status": o.status,
                                 "error": o.error} for o in ended if o.status != "succeeded"]
        return outputs
