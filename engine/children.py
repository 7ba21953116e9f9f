"""Child runs of composite nodes: the port a node starts them through, and the save-time check
that a workflow does not call itself.

A child run is a run: inserted like a submit (pinned to one version), with its parent run, node,
the epoch of the attempt that started it and its item index. A sub-workflow's child runs another
workflow; a batch's or loop's child runs the node's inline body (`runs.body`) of the parent's own
version. Its root nodes are inserted `waiting`, and start only once the parent node is parked
(`delegated`), so a child can never end before its parent waits for it. No SQL here: the store
does that.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from engine import telemetry
from engine.errors import DefinitionError, InvalidInputs, NotFound, PermanentNodeError
from engine.nodes.base import ChildOutcome
from engine.settings import Settings
from engine.store import NewItems, NewRun, Store
from engine.versions import VersionCache

SUBWORKFLOW_TYPE = "workflow"


class ChildStarter:
    """`NodeContext.children` of one attempt: inserts its child runs and remembers them to send."""

    def __init__(self, store: Store, versions: VersionCache, settings: Settings, run_id: uuid.UUID,
                 node_id: str, epoch: int, space_id: str, version_id: int = 0, body: str = "") -> None:
        self.store = store
        self.versions = versions
        self.settings = settings
        self.run_id = run_id
        self.node_id = node_id
        self.epoch = epoch
        self.space_id = space_id
        self.version_id = version_id  # the run's version: an inline body runs the same one
        self.body = body  # the body the run itself executes ('' : the whole workflow)
        self.started: list[uuid.UUID] = []  # sub-workflow children inserted by this attempt
        self.total = 0  # children inserted (all kinds)
        self.concurrency = 0  # how many may run at once (0: all)
        self.fail_fast = True
        self.first_index = 0  # the index of the first child inserted (a loop's iteration number)
        self.state: dict[str, Any] | None = None  # what the node keeps while it waits (a loop's)

    def start(self, workflow: str, version: int | None, inputs: dict[str, Any]) -> str:
        """Insert a child run of this attempt (its messages are sent once the node is parked)."""
        try:
            record = self.store.catalog.resolve_workflow(self.space_id, workflow, version)
        except NotFound as exc:
            raise PermanentNodeError(f"Node {self.node_id}: {exc.message}", node_id=self.node_id) from None
        if version is None:
            # Pinned: every attempt of this node runs the version its first child ran, so a
            # retry after a publish still runs what the run started with.
            first = self.store.views.first_child_version(self.run_id, self.node_id)
            if first is not None and first != record.id:
                pinned = self.store.catalog.get_version_by_id(first)
                if pinned.workflow_id == record.workflow_id:
                    record = pinned
        depth = self._depth(f"calling workflow {workflow}", workflow)
        compiled = self.versions.get(record.id)
        try:
            clean = compiled.validate_inputs(inputs)
        except InvalidInputs as exc:
            raise PermanentNodeError(f"Node {self.node_id}: the inputs do not fit workflow {workflow}: {exc.message}",
                                     node_id=self.node_id) from None
        submitted = self.store.lifecycle.insert_run(NewRun(
            run_id=uuid.uuid4(), space_id=self.space_id, workflow_id=record.workflow_id, version_id=record.id,
            version=record.version, inputs=clean, node_count=len(compiled.nodes),
            roots=[(n, 0, compiled.nodes[n].join == "any") for n in compiled.roots],
            # one key per (attempt, child): the same child is never inserted twice
            idempotency_key=f"child:{self.run_id}:{self.node_id}:{self.epoch}:{len(self.started)}",
            deadline_s=compiled.deadline_s, parent_run_id=self.run_id, parent_node_id=self.node_id,
            parent_epoch=self.epoch, depth=depth, item_index=len(self.started)))
        self.started.append(submitted.run_id)
        self.total = len(self.started)
        return str(submitted.run_id)

    def start_items(self, items: list[Any], shared: dict[str, Any], concurrency: int, fail_fast: bool,
                    first_index: int = 0) -> int:
        """Insert one child run of this node's inline body per item (roots waiting) in one statement."""
        path = f"{self.body}/{self.node_id}" if self.body else self.node_id
        body = self.versions.get(self.version_id, path)
        depth = self._depth("running its body", path)
        record = self.store.catalog.get_version_by_id(self.version_id)
        self.total = self.store.lifecycle.insert_items(NewItems(
            space_id=self.space_id, workflow_id=record.workflow_id, version_id=self.version_id,
            version=record.version, body=path, items=items, shared=shared, node_count=len(body.nodes),
            roots=[(n, body.nodes[n].join == "any") for n in body.roots], parent_run_id=self.run_id,
            parent_node_id=self.node_id, parent_epoch=self.epoch, depth=depth, first_index=first_index))
        self.concurrency, self.fail_fast, self.first_index = concurrency, fail_fast, first_index
        return self.total

    def keep(self, state: dict[str, Any]) -> None:
        """Keep `state` with the node while it waits: its wake's `ctx.resume` holds it beside the outcome."""
        self.state = state

    def node_outputs(self, child_run_id: str, node_ids: list[str]) -> dict[str, Any]:
        """The outputs of some nodes of one child run (None: the node was skipped or has none)."""
        _, outputs = self.store.lifecycle.load_outputs(uuid.UUID(child_run_id), node_ids, False)
        return outputs

    def iterations(self, first_epoch: int, marks: list[str]) -> list[ChildOutcome]:
        """A loop attempt's iterations (children from `first_epoch` on), in order, in one query;
        `marked` when one of the nodes `marks` succeeded in it."""
        return [ChildOutcome(index=r["item_index"], run_id=str(r["id"]), status=r["status"], outputs=r["outputs"],
                             error=r["error"], marked=bool(r["marked"]))
                for r in self.store.views.loop_iterations(self.run_id, self.node_id, first_epoch, marks)]

    def outcomes(self, child_run_id: str) -> list[ChildOutcome]:
        """Every child of the attempt that started `child_run_id`, in item order."""
        return [ChildOutcome(index=r["item_index"], run_id=str(r["id"]), status=r["status"], outputs=r["outputs"],
                             error=r["error"]) for r in self.store.views.child_outcomes(uuid.UUID(child_run_id))]

    def cancel_rest(self, child_run_id: str) -> int:
        """Cancel the live children of that attempt: never-started ones in bulk, started ones one by
        one (their own descendants are cancelled with them). They wake nobody: this node is running."""
        child = uuid.UUID(child_run_id)
        epoch = self.store.views.child_epoch(child)
        count = 0
        for started in self.store.views.live_started_children(child):
            ended = self.store.lifecycle.end_run(started, "cancelled")
            telemetry.run_ended(self.store, ended)
            count += int(ended.changed)
        if epoch is not None:
            count += self.store.lifecycle.cancel_unstarted_children(self.run_id, self.node_id, epoch)
        return count

    def _depth(self, doing: str, callee: str) -> int:
        """The depth of a new child run; refused (naming the chain) past RELAYFLOW_MAX_RUN_DEPTH."""
        chain = self.store.views.run_ancestry(self.run_id)
        depth = (chain[-1]["depth"] if chain else 0) + 1
        if depth > self.settings.max_run_depth:
            names = " → ".join([c["name"] for c in chain] + [callee])
            raise PermanentNodeError(
                f"Node {self.node_id}: {doing} would nest runs {depth} deep, over the limit of "
                f"{self.settings.max_run_depth} (RELAYFLOW_MAX_RUN_DEPTH): {names}.", node_id=self.node_id)
        return depth


def static_refs(definition: Mapping[str, Any]) -> Iterator[tuple[str, str, int | None]]:
    """(node id, workflow reference, version) of each sub-workflow node whose reference is not a
    template, in inline bodies too (`outer/inner`)."""
    for node in definition.get("nodes") or []:
        if not isinstance(node, Mapping):
            continue
        config = node.get("config") or {}
        if isinstance(config, Mapping) and isinstance(config.get("nodes"), list):
            for inner, inner_ref, inner_version in static_refs(config):
                yield f"{node.get('id')}/{inner}", inner_ref, inner_version
        if node.get("type") != SUBWORKFLOW_TYPE:
            continue
        ref, version = config.get("workflow"), config.get("version")
        if isinstance(ref, str) and "{{" not in ref and "{%" not in ref:
            yield str(node.get("id")), ref, version if isinstance(version, int) else None


def check_no_recursion(store: Store, space_id: str, workflow_id: str | None, name: str,
                       definition: Mapping[str, Any]) -> None:
    """Refuse (422, naming the node and the chain `a → b → a`) a definition whose static
    sub-workflow references lead back to the workflow being saved, or name no workflow of the space."""
    errors: list[dict[str, Any]] = []
    for node_id, ref, version in static_refs(definition):
        field = "config.workflow"
        if ref in (workflow_id, name):
            errors.append({"node_id": node_id, "field": field,
                           "message": f"the workflow calls itself: {name} → {name}"})
            continue
        try:
            record = store.catalog.resolve_workflow(space_id, ref, version)
        except NotFound as exc:
            errors.append({"node_id": node_id, "field": field, "message": exc.message})
            continue
        chain = _path_back(store, space_id, record.workflow_id, record.definition, workflow_id, name, set())
        if chain is not None:
            names = " → ".join([name, _name_of(store, space_id, record.workflow_id), *chain])
            errors.append({"node_id": node_id, "field": field,
                           "message": f"the workflow calls itself through {ref}: {names}"})
    if errors:
        raise DefinitionError(errors=errors)


def _path_back(store: Store, space_id: str, current: str, definition: Mapping[str, Any], target_id: str | None,
               target_name: str, seen: set[str]) -> list[str] | None:
    """The names from `current`'s callees back to the target workflow, if its static calls reach it."""
    if current in seen:
        return None
    seen.add(current)
    for _node_id, ref, version in static_refs(definition):
        if ref in (target_id, target_name):
            return [target_name]
        try:
            record = store.catalog.resolve_workflow(space_id, ref, version)
        except NotFound:
            continue
        if record.workflow_id == target_id:
            return [target_name]
        rest = _path_back(store, space_id, record.workflow_id, record.definition, target_id, target_name, seen)
        if rest is not None:
            return [_name_of(store, space_id, record.workflow_id), *rest]
    return None


def _name_of(store: Store, space_id: str, workflow_id: str) -> str:
    return str(store.catalog.get_workflow(workflow_id, space_id)["name"])
