"""Plans a rerun from a node: which node outcomes of the source run are reused, which nodes run again.

No I/O. `plan_rerun` reads the compiled graph and the source's recorded outcomes and says, for the
new run, what the store inserts: the reused rows (copied from the source), and the frontier rows
with the join counters the normal successor logic (COMMIT_NODE's successor upsert) continues from,
as if each reused node had committed in this run; `render_with_overrides` changes the rendered inputs
and config of the rerun-from node's attempts (`render_with_overrides`).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.compiler import CompiledNode, CompiledWorkflow
from engine.errors import InvalidInputs
from engine.nodes.base import NodeConfig
from engine.statuses import NodeStatus


@dataclass(frozen=True)
class Outcome:
    """A node's recorded outcome in the source run (its row), as the plan needs it."""

    status: str
    port: str | None = None
    settled: bool = False

    @property
    def reusable(self) -> bool:
        """Decided for good in the source: succeeded, skipped, or failed and the run went on
        (`on_error: default|branch`, which commits the node settled). The node that failed the
        run is not (its row is failed and never settled)."""
        return (self.status in (NodeStatus.SUCCEEDED, NodeStatus.SKIPPED)
                or (self.status == NodeStatus.FAILED and self.settled))


@dataclass(frozen=True)
class FrontierRow:
    """A node row the rerun inserts undecided (`waiting`, `queued`) or decided `skipped`."""

    node_id: str
    status: str
    in_degree: int
    join_any: bool
    pending_in: int
    active_in: int


@dataclass(frozen=True)
class RerunPlan:
    """What the new run starts with."""

    reused: tuple[str, ...]
    frontier: tuple[FrontierRow, ...]
    remaining: int  # nodes left to decide (runs.remaining)
    rerun: tuple[str, ...] = field(default=())  # every node that runs again (from_node's downstream, ...)

    @property
    def queued(self) -> tuple[str, ...]:
        """The nodes to send at once."""
        return tuple(r.node_id for r in self.frontier if r.status == NodeStatus.QUEUED)


def refused(field_: str, message: str) -> InvalidInputs:
    """A 422 naming the request field at fault."""
    return InvalidInputs(errors=[{"field": field_, "message": message}])


def downstream(workflow: CompiledWorkflow, start: str) -> set[str]:
    """`start` and every node reachable from it."""
    seen, todo = {start}, [start]
    while todo:
        for succ in workflow.nodes[todo.pop()].successors:
            if succ not in seen:
                seen.add(succ)
                todo.append(succ)
    return seen


def upstream(workflow: CompiledWorkflow, start: str) -> set[str]:
    """Every node `start` is reachable from (not `start` itself)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for pred in workflow.nodes[todo.pop()].preds:
            if pred not in seen:
                seen.add(pred)
                todo.append(pred)
    return seen


def plan_rerun(workflow: CompiledWorkflow, from_node: str, outcomes: Mapping[str, Outcome],
               source_run_id: str) -> RerunPlan:
    """Plan a rerun of `workflow` from `from_node`, given the source run's node outcomes.

    Every node not downstream of `from_node` reuses its outcome. A node neither downstream nor
    reusable (a parallel branch the source's failure cancelled) runs again too, with its own
    downstream: there is nothing to reuse. Raises InvalidInputs (422) naming `from_node` when it
    is no node, when a node upstream of it has no reusable outcome, or when the reused outcomes
    would skip it (its branch was not chosen).
    """
    if from_node not in workflow.nodes:
        known = ", ".join(workflow.order[:20])
        raise refused("from_node", f"'{from_node}' is not a node of this workflow version (its nodes: {known})")
    missing = sorted(n for n in upstream(workflow, from_node) if not _reusable(outcomes, n))
    if missing:
        shown = ", ".join(f"{n} ({outcomes[n].status if n in outcomes else 'never reached'})" for n in missing[:5])
        raise refused("from_node", f"cannot rerun from '{from_node}': node(s) upstream of it have no recorded "
                                   f"successful outcome in run {source_run_id}: {shown}; rerun from one of those")
    rerun = downstream(workflow, from_node)
    for node_id in workflow.order:
        if node_id not in rerun and not _reusable(outcomes, node_id):
            rerun |= downstream(workflow, node_id)
    reused = [n for n in workflow.order if n not in rerun]
    frontier = _frontier(workflow, rerun, reused, outcomes)
    start = next((r for r in frontier if r.node_id == from_node), None)
    if start is None or start.status != NodeStatus.QUEUED:
        raise refused("from_node", f"cannot rerun from '{from_node}': the reused outcomes of its predecessors do "
                                   "not activate it (a branch or error port that was not taken)")
    skipped = sum(1 for r in frontier if r.status == NodeStatus.SKIPPED)
    return RerunPlan(reused=tuple(reused), frontier=tuple(frontier),
                     remaining=len(workflow.nodes) - len(reused) - skipped,
                     rerun=tuple(n for n in workflow.order if n in rerun))


def _reusable(outcomes: Mapping[str, Outcome], node_id: str) -> bool:
    found = outcomes.get(node_id)
    return found is not None and found.reusable


def _frontier(workflow: CompiledWorkflow, rerun: set[str], reused: list[str],
              outcomes: Mapping[str, Outcome]) -> list[FrontierRow]:
    """Signal every reused node's successors (and, in turn, every node that becomes skipped) as the
    executor does: per successor, `cnt` decided predecessors and `act` active ones."""
    counts: dict[str, list[int]] = {}  # node -> [decided, active]
    decided: dict[str, NodeStatus] = {}
    todo: deque[tuple[str, str | None, bool]] = deque(
        (n, outcomes[n].port, outcomes[n].status == NodeStatus.SKIPPED) for n in reused)
    while todo:
        source, port, skipped = todo.popleft()
        for signal in workflow.signals(source, port, skipped=skipped):
            if signal.node_id not in rerun:
                continue
            entry = counts.setdefault(signal.node_id, [0, 0])
            entry[0] += 1
            entry[1] += int(signal.active)
            if entry[0] == signal.in_degree:
                runs = entry[1] > 0 if signal.join_any else entry[1] == signal.in_degree
                decided[signal.node_id] = NodeStatus.QUEUED if runs else NodeStatus.SKIPPED
                if not runs:
                    todo.append((signal.node_id, None, True))
    # A node of the rerun set no predecessor signalled has no row yet, like any unreached node,
    # except a root (no predecessors) that runs again: it is queued, as at submit.
    rows = []
    for node_id in workflow.order:
        if node_id not in rerun:
            continue
        node = workflow.nodes[node_id]
        degree = len(node.preds)
        cnt, act = counts.get(node_id, [0, 0])
        if degree == 0:
            status = NodeStatus.QUEUED
        elif node_id in decided:
            status = decided[node_id]
        elif cnt > 0:
            status = NodeStatus.WAITING
        else:
            continue
        rows.append(FrontierRow(node_id, status, degree, node.join == "any", degree - cnt, act))
    return rows


def input_names(workflow: CompiledWorkflow, node_id: str) -> set[str]:
    """The names of a node's declared `inputs` (what `overrides.inputs` may replace)."""
    for spec in workflow.definition.get("nodes") or []:
        if isinstance(spec, dict) and spec.get("id") == node_id:
            return set((spec.get("inputs") or {}).keys())
    return set()


def render_with_overrides(node: CompiledNode, context: dict[str, Any],
                          overrides: dict[str, Any] | None) -> tuple[NodeConfig, dict[str, Any]]:
    """Render the node's config and inputs, with a rerun's overrides when it is the node the rerun
    started from (`overrides` is None for every other node): named inputs replaced before the config
    renders (so templated config fields see them), then the model and the prompt version."""
    if not overrides:
        return node.render(context)
    config, inputs = node.render(context, overrides.get("inputs"))
    update: dict[str, Any] = {}
    if overrides.get("model") and hasattr(config, "model"):
        update["model"] = overrides["model"]
    prompt = getattr(config, "prompt", None)
    if overrides.get("prompt_version") and prompt is not None and hasattr(prompt, "key"):
        update["prompt"] = prompt.model_copy(update={"version": int(overrides["prompt_version"]), "label": None})
    if update:
        config = config.model_copy(update=update)
    return config, inputs
