"""The `loop` node (Coze's Loop): runs an inline body once per iteration, one iteration at a time.

Modes: `array` (one iteration per item), `count` (`count` iterations) and `while` (as long as
`condition`, a sandboxed Jinja expression over `vars`, `index` and `inputs`, holds). Each
iteration is a child run of the node's body (same version, `item_index` = the iteration). The
body's `set_variable` nodes update the loop variables for the next iteration, a `break` node ends
the loop after its iteration, and a `continue` node leaves its iteration out of the outputs.

The node holds no worker between iterations: it starts one child and waits (`delegated`); that
child's end queues it again (same attempt, `ctx.resume` = the kept state plus the child's
outcome), it reads only that child's set_variable/break nodes, decides, and starts the next.
Its state is O(1) per iteration (the attempt's first epoch, the iteration number and the current
variables); the per-iteration outputs are gathered once, at the end, in one query.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from engine.errors import NodeError, PermanentNodeError
from engine.nodes.base import OUTER_KEY, NodeConfig, NodeContext, NodeType, WaitForChildren
from engine.templates import CompiledValue, TemplateError, compile_value, is_template

if TYPE_CHECKING:
    from engine.compiler import CompiledWorkflow

STATE = "loop"  # the key of the loop's own state in `ctx.resume` (beside the child's outcome)
RESERVED_OUTPUTS = frozenset({"variables", "iterations"})
SET_VARIABLE, BREAK, CONTINUE = "set_variable", "break", "continue"


class LoopConfig(NodeConfig):
    """Config of a `loop` node: the mode and its bound, the loop variables, the body and its outputs."""

    mode: Literal["array", "count", "while"]
    items: list[Any] | None = Field(default=None, validate_default=True)  # array mode; usually a template
    count: int | None = Field(default=None, ge=0, validate_default=True)  # count mode
    # while mode: a Jinja expression (no braces) over `vars`, `index` and `inputs`, checked before
    # each iteration; the loop ends when it is false.
    condition: str | None = Field(default=None, validate_default=True)
    # At most this many iterations; RELAYFLOW_LOOP_MAX_ITERATIONS caps it (and is the default).
    max_iterations: int | None = Field(default=None, ge=1)
    variables: dict[str, Any] = Field(default_factory=dict)  # name -> initial value (templates allowed)
    nodes: list[dict[str, Any]] = Field(min_length=1)  # the body: sees item, index, vars and the node's inputs
    outputs: dict[str, Any] = Field(default_factory=dict)  # per-iteration outputs, rendered from the body

    @field_validator("items", "count", "condition")
    @classmethod
    def _fits_the_mode(cls, value: Any, info: ValidationInfo) -> Any:
        mode = info.data.get("mode")
        wanted = {"array": "items", "count": "count", "while": "condition"}.get(mode or "")
        if wanted is None:
            return value
        if info.field_name == wanted and value is None:
            raise ValueError(f"mode '{mode}' needs config.{wanted}")
        if info.field_name != wanted and value is not None:
            raise ValueError(f"config.{info.field_name} is not used in mode '{mode}' (it needs config.{wanted})")
        if info.field_name == "condition" and value is not None:
            condition_template(value)
        return value

    @field_validator("variables")
    @classmethod
    def _names(cls, variables: dict[str, Any]) -> dict[str, Any]:
        for name in variables:
            if not name.isidentifier():
                raise ValueError(f"loop variable name {name!r} must be an identifier (letters, digits, _)")
        return variables

    @field_validator("outputs")
    @classmethod
    def _not_reserved(cls, outputs: dict[str, Any]) -> dict[str, Any]:
        for name in sorted(RESERVED_OUTPUTS & set(outputs)):
            raise ValueError(f"output name {name!r} is reserved: the loop outputs its own {name}")
        return outputs


@lru_cache(maxsize=256)
def condition_template(condition: str) -> CompiledValue:
    """The while condition as a compiled single-expression template (ValueError if it is not one)."""
    if is_template(condition):
        raise ValueError("config.condition is a bare Jinja expression: write it without {{ }}")
    try:
        return compile_value("{{ " + condition + " }}", "config.condition")
    except TemplateError as exc:
        raise ValueError(exc.message) from None


class LoopNode(NodeType[LoopConfig]):
    """Runs the body once per iteration; outputs are arrays in iteration order plus the final variables."""

    type_name = "loop"
    Config = LoopConfig
    opaque_fields = frozenset({"nodes", "outputs", "condition"})  # compiled or evaluated by the loop itself
    body_field = "nodes"
    body_locals = frozenset({"item", "index", "vars"})

    @classmethod
    def body_inputs(cls, config: NodeConfig, input_names: frozenset[str]) -> dict[str, str]:
        """Each iteration's child run gets `item` (null unless array mode), `index`, `vars` and the node's inputs."""
        return {"item": "any", "index": "integer", "vars": "object",
                **dict.fromkeys(sorted(input_names - {OUTER_KEY}), "any")}

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        assert isinstance(config, LoopConfig)
        return frozenset(config.outputs) | RESERVED_OUTPUTS

    @classmethod
    def check_body(cls, config: NodeConfig, body: CompiledWorkflow) -> list[tuple[str, str | None, str]]:
        """A set_variable node may only set declared loop variables."""
        assert isinstance(config, LoopConfig)
        problems: list[tuple[str, str | None, str]] = []
        declared = ", ".join(sorted(config.variables)) or "none"
        for node in body.nodes.values():
            if node.type_name != SET_VARIABLE:
                continue
            for name in sorted(node.config_source.get("values") or {}):
                if name not in config.variables:
                    problems.append((node.id, f"config.values.{name}",
                                     f"'{name}' is not a variable of the loop; declared in its config.variables: {declared}"))
        return problems

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Start the first iteration, or (woken by an iteration's end) the next one, or finish."""
        if ctx.children is None:
            raise PermanentNodeError(f"Node {ctx.node_id}: child runs cannot be started here.", node_id=ctx.node_id)
        resumed = ctx.resume or {}
        if STATE not in resumed or "child_run_id" not in resumed:
            limit = self._limit(ctx)
            planned = len(self.config.items or []) if self.config.mode == "array" else self.config.count
            if planned is not None and planned > limit:
                raise PermanentNodeError(
                    f"Node {ctx.node_id}: {planned:,} iterations, over the limit of {limit:,} "
                    f"({self._limit_source(ctx, limit)}).", node_id=ctx.node_id, field=f"config.{self._bound()}")
            return self._next(ctx, inputs, ctx.children.epoch, 0, dict(self.config.variables))
        state = resumed[STATE]
        index, variables = int(state["index"]), dict(state["vars"])
        child, status = str(resumed["child_run_id"]), resumed.get("status")
        if status != "succeeded":
            why = (resumed.get("error") or {}).get("message") or "no error given"
            message = f"Node {ctx.node_id}: iteration {index} (child run {child}) {status}: {why}"
            error = PermanentNodeError if status == "cancelled" else NodeError
            raise error(message, node_id=ctx.node_id, item_index=index, child_run_id=child)
        broke = self._apply(ctx, child, variables)
        if broke:
            return self._finish(ctx, int(state["first_epoch"]), index + 1, variables)
        return self._next(ctx, inputs, int(state["first_epoch"]), index + 1, variables)

    def _apply(self, ctx: NodeContext, child: str, variables: dict[str, Any]) -> bool:
        """Apply the iteration's set_variable nodes (in body order) to `variables`; whether a break ran.
        Reads only those nodes' outputs of that one child."""
        assert ctx.children is not None
        setters = self._body_ids(SET_VARIABLE)
        breaks = self._body_ids(BREAK)
        if not setters and not breaks:
            return False
        outputs = ctx.children.node_outputs(child, setters + breaks)
        for node_id in setters:
            values = outputs.get(node_id)
            if isinstance(values, dict):
                variables.update({k: v for k, v in values.items() if k in self.config.variables})
        return any(isinstance(outputs.get(b), dict) and outputs[b].get("break") for b in breaks)

    def _next(self, ctx: NodeContext, inputs: dict[str, Any], first_epoch: int, index: int,
              variables: dict[str, Any]) -> dict[str, Any]:
        """Start iteration `index` (one child run) and wait, or finish if there is none."""
        assert ctx.children is not None
        mode, item = self.config.mode, None
        if mode == "array":
            items = self.config.items or []
            if index >= len(items):
                return self._finish(ctx, first_epoch, index, variables)
            item = items[index]
        elif mode == "count":
            if index >= (self.config.count or 0):
                return self._finish(ctx, first_epoch, index, variables)
        else:
            assert self.config.condition is not None
            context = {"vars": variables, "index": index, "inputs": inputs}
            if not condition_template(self.config.condition).render(context):
                return self._finish(ctx, first_epoch, index, variables)
            limit = self._limit(ctx)
            if index >= limit:
                raise PermanentNodeError(
                    f"Node {ctx.node_id}: the while loop reached its cap of {limit:,} iterations "
                    f"({self._limit_source(ctx, limit)}) with its condition still true.",
                    node_id=ctx.node_id, field="config.max_iterations")
        ctx.children.start_items([item], {**inputs, "vars": variables}, 1, True, first_index=index)
        ctx.children.keep({STATE: {"first_epoch": first_epoch, "index": index, "vars": variables}})
        raise WaitForChildren([])

    def _finish(self, ctx: NodeContext, first_epoch: int, ran: int, variables: dict[str, Any]) -> dict[str, Any]:
        """The outputs: each per-iteration output as an array (continued iterations left out), gathered
        once in one query, plus the final variables and the number of iterations run."""
        assert ctx.children is not None
        done = ctx.children.iterations(first_epoch, self._body_ids(CONTINUE)) if ran and self.config.outputs else []
        kept = [o for o in done if not o.marked]
        outputs: dict[str, Any] = {key: [(o.outputs or {}).get(key) for o in kept] for key in self.config.outputs}
        outputs["variables"] = variables
        outputs["iterations"] = ran
        return outputs

    def _body_ids(self, type_name: str) -> list[str]:
        return [str(n.get("id")) for n in self.config.nodes if n.get("type") == type_name]

    def _bound(self) -> str:
        return {"array": "items", "count": "count"}.get(self.config.mode, "max_iterations")

    def _limit(self, ctx: NodeContext) -> int:
        cap = ctx.settings.loop_max_iterations
        return min(self.config.max_iterations or cap, cap)

    def _limit_source(self, ctx: NodeContext, limit: int) -> str:
        return "config.max_iterations" if limit == self.config.max_iterations else "RELAYFLOW_LOOP_MAX_ITERATIONS"
