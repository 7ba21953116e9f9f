"""Runs one node attempt: claim, execute outside any transaction, commit, send successors.

This is the body of the `run_node` actor. Decisions about the graph come from the compiled
workflow (pure); every state change is one fenced statement in the store. An attempt ends in
one `Outcome` (engine/outcomes.py), and each outcome has one small handler (`_settle` dispatches
them). What follows a failed attempt or a crashed worker is in engine/failures.py (a part the
executor holds); a pure node's unclaimed path is in engine/unclaimed.py (a mixin: it runs the
executor's own steps).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, assert_never

from engine import metrics, oplog, telemetry
from engine.children import ChildStarter
from engine.compiler import CompiledNode, CompiledWorkflow
from engine.dispatch import Dispatcher
from engine.errors import NodeError, NodeTimeout, PermanentNodeError, RunDeadlineExceeded
from engine.failures import Failures
from engine.models.calling import Hub
from engine.nodes.base import Interrupt, NodeContext, WaitForChildren
from engine.notify import Notifier, NullNotifier
from engine.outcomes import Delegated, Failed, Interrupted, Outcome, Succeeded, merge_signals, succeeded_event
from engine.outputs import check_outputs
from engine.prompt_cache import PromptCache
from engine.rerun_plan import render_with_overrides
from engine.settings import Settings
from engine.store import Claim, Decision, Ended, StartedNode, Store
from engine.template_limits import Limits, configure, deadline, json_size
from engine.templates import render_text
from engine.unclaimed import UnclaimedPath
from engine.versions import VersionCache
from engine.watchdog import NodeOverran, Watchdog

log = logging.getLogger("relayflow.executor")
OUTPUTS_RENDER_S = 60.0  # the most time rendering a run's `outputs` may take


class Executor(UnclaimedPath):
    """Executes node messages against the store; one per worker process."""

    def __init__(self, store: Store, dispatcher: Dispatcher, settings: Settings,
                 notifier: Notifier | None = None) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings
        self.notifier = notifier or NullNotifier()
        self.versions = VersionCache(store.catalog)
        self.models = Hub(store, settings)  # handed to nodes as `NodeContext.models`
        self.prompts = PromptCache(store.prompts)  # bound per attempt as `NodeContext.prompts`
        self._inflight: set[int] = set()
        self.worker_id: str | None = None  # this process's `workers` row (set by the worker runtime)
        self._inflight_lock = threading.Lock()
        self.watchdog = Watchdog(settings.node_timeout_grace_s)
        self.failures = Failures(self)  # retries, on_error, crashed workers (engine/failures.py)
        configure(Limits.from_settings(settings))

    # -- the actor body ---------------------------------------------------------------------
    def run_node(self, run_id: str, node_id: str, pure: bool = False) -> None:
        """Claim and execute one node; a duplicate or stale message is a no-op.

        `pure` (the message of a pure type's node): execute it unclaimed if it is still untouched
        (engine/unclaimed.py)."""
        rid = uuid.UUID(run_id)
        if pure and not self.settings.claim_pure_nodes and self._run_unclaimed(rid, node_id):
            return
        claim = self._claim(rid, node_id)
        if claim is None:  # a duplicate, or its space is at its cap (then it waits for a freed slot)
            return
        self.notifier.run_changed(run_id)
        try:
            self._run_claimed(rid, node_id, claim)
        finally:
            telemetry.node_finished()
            self.notifier.run_changed(run_id)

    def _run_claimed(self, rid: uuid.UUID, node_id: str, claim: Claim) -> None:
        workflow = self.versions.get(claim.version_id, claim.body)
        node = workflow.nodes[node_id]
        telemetry.node_started(self.store, rid, node, claim)
        limit = self._time_limit(node, claim.deadline_at)
        if limit is None:
            self.send_parent(self.store.lifecycle.end_run(rid, "failed", RunDeadlineExceeded.run_error(node_id)))
            oplog.run_deadline(rid, node_id)
            return
        timeout_s, deadline_bound = limit
        with self._inflight_lock:
            self._inflight.add(claim.node_row_id)
        attempt_started = time.monotonic()
        try:
            outcome = self._attempt(rid, workflow, node, claim, timeout_s, deadline_bound)
        finally:
            with self._inflight_lock:
                self._inflight.discard(claim.node_row_id)
        metrics.attempt_ended(node.type_name, outcome, time.monotonic() - attempt_started)
        self._settle(rid, workflow, node, claim, outcome)

    def _claim(self, rid: uuid.UUID, node_id: str) -> Claim | None:
        """Claim the node for this worker with the deployment's lease and cap (None: a duplicate, or
        its space is full and it now waits for a slot)."""
        return self.store.lifecycle.claim(rid, node_id, self.settings.lease_s, self.settings.retry_grace_s,
                                          self.settings.space_max_running_nodes, self.worker_id)

    def _time_limit(self, node: CompiledNode, deadline_at: datetime | None) -> tuple[float, bool] | None:
        """The attempt's time limit, and whether the run's deadline (not the node's timeout) sets it;
        None once the run's deadline has passed."""
        deadline_left = _seconds_until(deadline_at)
        if deadline_left is not None and deadline_left <= 0:
            return None
        timeout_s = node.timeout_s or self.settings.default_node_timeout_s
        if deadline_left is not None and deadline_left < timeout_s:
            return deadline_left, True
        return timeout_s, False

    def _attempt(self, run_id: uuid.UUID, workflow: CompiledWorkflow, node: CompiledNode, claim: Claim,
                 timeout_s: float, deadline_bound: bool) -> Outcome:
        """Execute the claimed node and say how the attempt ended (no state change here)."""
        report: dict[str, Any] = {}  # what the node tells about its attempt (LLM: model, usage)
        # a pure type starts no child runs (and an unclaimed attempt has no epoch to give them)
        children = None if node.node_type.pure else ChildStarter(
            self.store, self.versions, self.settings, run_id, node.id, claim.epoch, claim.space_id or "",
            claim.version_id, claim.body)
        try:
            outputs, port = self._execute(run_id, node, claim, timeout_s, report, children)
        except Interrupt as asked:
            return Interrupted(asked.kind, asked.data)
        except WaitForChildren:
            if children is None or children.total == 0:
                return Failed(PermanentNodeError(f"Node {node.id} waited for child runs but started none.",
                                                 node_id=node.id), report)
            return Delegated(children.total, children.concurrency, children.fail_fast, tuple(children.started),
                             children.first_index, children.state)
        except NodeError as exc:
            if deadline_bound and isinstance(exc, NodeTimeout):
                exc = RunDeadlineExceeded(f"Node {node.id} was stopped at the run's deadline "
                                          f"({workflow.deadline_s:g}s after the run was submitted).")
            return Failed(exc, report)
        except Exception as exc:  # a bug in a node type: record it like any failure
            log.exception("node type raised", extra={"run_id": str(run_id), "node_id": node.id,
                                                     "attempt": claim.attempt, "space_id": claim.space_id})
            # what a node that broke its contract reported is not recorded
            return Failed(NodeError(f"{type(exc).__name__}: {exc}", retryable=True), {})
        return Succeeded(outputs, port, report)

    # -- one handler per outcome ------------------------------------------------------------
    def _settle(self, run_id: uuid.UUID, workflow: CompiledWorkflow, node: CompiledNode, claim: Claim,
                outcome: Outcome) -> None:
        """Record the outcome of an attempt with its handler."""
        if isinstance(outcome, Succeeded):
            self._succeeded(run_id, workflow, node, claim, outcome)
        elif isinstance(outcome, Interrupted):
            self._interrupted(run_id, node, claim, outcome)
        elif isinstance(outcome, Failed):
            self.handle_failure(run_id, workflow, node, claim, outcome.error, outcome.report)
        elif isinstance(outcome, Delegated):
            self._delegated(run_id, node, claim, outcome)
        else:
            assert_never(outcome)

    def _succeeded(self, run_id: uuid.UUID, workflow: CompiledWorkflow, node: CompiledNode, claim: Claim,
                   done: Succeeded) -> None:
        """Commit the outputs, queue the successors that became ready, and send them."""
        report, port = done.report, done.port
        entry = {"attempt": claim.attempt, **report, "started_at": claim.claimed_at.isoformat(),
                 "at": datetime.now(UTC).isoformat()}
        decision = self.store.lifecycle.commit_node(
            run_id, node.id, claim, status="succeeded", output=done.outputs, error=None, port=port,
            signals=merge_signals(workflow.signals(node.id, port)), event_type="node.succeeded",
            event_data=succeeded_event(node, claim.attempt, port, done.outputs),
            log=[entry] if report else None, report=report)
        telemetry.node_settled(run_id, node, claim, "succeeded" if decision.committed else "superseded", port=port)
        if decision.wake:
            self.wake(claim.space_id)
        self._after(run_id, workflow, decision)

    def _interrupted(self, run_id: uuid.UUID, node: CompiledNode, claim: Claim, asked: Interrupted) -> None:
        """Park the node on its question; its slot is freed for the space's next waiting node."""
        if self.store.lifecycle.interrupt_node(run_id, node.id, claim, event_id=uuid.uuid4().hex, kind=asked.kind,
                                               data=asked.data):
            telemetry.node_settled(run_id, node, claim, "interrupted", kind=asked.kind)
            self.wake(claim.space_id)

    def _delegated(self, run_id: uuid.UUID, node: CompiledNode, claim: Claim, waiting: Delegated) -> None:
        """Park the node on its child runs, which starts the first ones, then send those (never
        before: a child that ended before its parent waited could not wake it)."""
        first = min(waiting.concurrency or waiting.total, waiting.total)
        event: dict[str, Any] = {"children": waiting.total, "concurrency": first}
        if waiting.child_run_ids:
            event["child_run_ids"] = [str(c) for c in waiting.child_run_ids]
        parked = self.store.lifecycle.delegate_node(run_id, node.id, claim, total=waiting.total, first=first,
                                                    fail_fast=waiting.fail_fast, event_data=event,
                                                    first_index=waiting.first_index, state=waiting.state)
        if not parked.parked:  # superseded (the run ended, or a newer attempt): the children must not run
            self.store.lifecycle.cancel_unstarted_children(run_id, node.id, claim.epoch)
            return
        telemetry.node_settled(run_id, node, claim, "delegated", children=waiting.total)
        self._send_started(parked.started)
        if parked.wake:
            self.wake(claim.space_id)

    def _send_started(self, started: Iterable[StartedNode]) -> None:
        """Send the root nodes of child runs a statement started; a pure type's to its own actor
        (a batch item's first template goes unclaimed like any other)."""
        for child in started:
            root = self.versions.get(child.version_id, child.body).nodes.get(child.node_id)
            self.dispatcher.send(str(child.run_id), child.node_id, pure=root is not None and root.node_type.pure)

    def send_parent(self, ended: Ended) -> None:
        """A child run's end queued its parent node again, or started the next child: send those
        messages (a lost one is re-sent by the reconciler, as any queued node's)."""
        telemetry.run_ended(self.store, ended)
        self._send_started(ended.started)
        if ended.parent is not None:
            parent_run, parent_node = ended.parent
            self.dispatcher.send(str(parent_run), parent_node)
        if ended.counted is not None:
            # the parent's node.progress (or node.woken) event: wake its stream's followers now
            self.notifier.run_changed(str(ended.counted))

    def _execute(self, run_id: uuid.UUID, node: CompiledNode, claim: Claim, timeout_s: float,
                 report: dict[str, Any], children: ChildStarter | None) -> tuple[dict[str, Any], str | None]:
        started = time.monotonic()
        # Every node type gets the same time limit: templates check the deadline in their
        # hooks, node types keep it cooperatively, and the watchdog stops what does neither.
        guard = None
        try:
            with deadline(started + timeout_s), self.watchdog.guard(started + timeout_s) as guard:
                outputs = self._run_type(run_id, node, claim, timeout_s, report, started, children)
        except NodeError as exc:
            if guard is not None and guard.fired and not isinstance(exc, NodeTimeout):
                raise self._overran(node.id, timeout_s) from exc
            raise
        except Exception as exc:  # the interrupt landed in code that wrapped it
            if guard is not None and guard.fired:
                raise self._overran(node.id, timeout_s) from exc
            raise
        if guard.fired or time.monotonic() - started > timeout_s:
            raise NodeTimeout(f"Node {node.id} took longer than its timeout of {timeout_s:g}s.")
        check_outputs(node.id, outputs, node.declared_outputs)
        self._check_size(node.id, "output", outputs, self.settings.node_output_max_bytes,
                         "RELAYFLOW_NODE_OUTPUT_MAX_BYTES")
        port_key = node.node_type.port_output
        return outputs, (str(outputs[port_key]) if port_key and outputs.get(port_key) is not None else None)

    def _run_type(self, run_id: uuid.UUID, node: CompiledNode, claim: Claim, timeout_s: float,
                  report: dict[str, Any], started: float, children: ChildStarter | None) -> dict[str, Any]:
        context = node.make_context(claim.run_inputs, claim.dep_outputs)
        config, inputs = render_with_overrides(node, context, claim.overrides)  # a rerun's, for its from_node
        rendered_config = config.model_dump() if node.config_template is not None else None
        self._check_size(node.id, "rendered inputs", [inputs, rendered_config], self.settings.node_input_max_bytes,
                         "RELAYFLOW_NODE_INPUT_MAX_BYTES")
        ctx = NodeContext(run_id=str(run_id), node_id=node.id, attempt=claim.attempt, timeout_s=timeout_s,
                          settings=self.settings, started_at=started,
                          render_text=lambda source, extra: render_text(source, {**context, **extra}),
                          resume=claim.resume,
                          emit_event=lambda event_type, data: self.emit(run_id, node.id, event_type, data),
                          report=report, declared_outputs=node.declared_outputs, models=self.models,
                          children=children, prompts=self.prompts.bind(claim.space_id, claim.node_row_id, node.id))
        return node.node_type(config).run(ctx, inputs)

    @staticmethod
    def _overran(node_id: str, timeout_s: float) -> NodeOverran:
        return NodeOverran(f"Node {node_id} was stopped: it ran past its timeout of {timeout_s:g}s.")

    @staticmethod
    def _check_size(node_id: str, what: str, value: Any, limit: int, setting: str) -> None:
        size = json_size(value, limit)
        if size > limit:
            shown = f"{size:,} bytes" if size <= limit * 2 else f"over {limit:,} bytes"
            raise PermanentNodeError(f"Node {node_id} {what} is {shown} as JSON, over the limit of "
                                     f"{limit:,} bytes ({setting}).", node_id=node_id, limit=limit)

    def emit(self, run_id: uuid.UUID, node_id: str, event_type: str, data: dict[str, Any]) -> None:
        """Record a live event of a running node and wake its followers (best effort)."""
        try:
            if self.store.lifecycle.append_event(run_id, node_id, event_type, data):
                self.notifier.run_changed(str(run_id))
        except Exception:  # progress events must never fail the node
            log.warning("could not record %s for %s/%s", event_type, run_id, node_id, exc_info=True)

    # -- failures (engine/failures.py) -------------------------------------------------------
    def handle_failure(self, run_id: uuid.UUID, workflow: CompiledWorkflow, node: CompiledNode,
                       claim: Claim, exc: NodeError, report: dict[str, Any] | None = None) -> None:
        """Retry the node, or apply its on_error strategy once retries are spent."""
        self.failures.handle_failure(run_id, workflow, node, claim, exc, report)

    def handle_crash(self, row: Any) -> str:
        """A node's lease expired (its worker died): re-queue it, or fail it after too many crashes.

        Returns what was done: `requeued`, `failed` (as crashed), or `superseded` (another
        process changed the node first)."""
        return self.failures.handle_crash(row)

    # -- fair share ----------------------------------------------------------------------------
    def wake(self, space_id: str | None, limit: int = 1) -> int:
        """A node of the space left `running`: send the oldest node waiting for its slot, if any.

        Best effort, like every message: a wake lost here (a crash, a race with a refusal) is
        repaired by the reconciler's sweep, which wakes waiters of every space with free slots.
        """
        if space_id is None:
            return 0
        try:
            woken = self.store.lifecycle.wake_waiters(space_id, self.settings.space_max_running_nodes, limit)
        except Exception:
            log.warning("could not wake a waiting node of space %s; the reconciler will", space_id, exc_info=True)
            return 0
        for run_id, node_id in woken:
            self.dispatcher.send(str(run_id), node_id)
        return len(woken)

    # -- after a commit -------------------------------------------------------------------------
    def _after(self, run_id: uuid.UUID, workflow: CompiledWorkflow, decision: Decision) -> None:
        """Send what became ready, propagate skips, and finish the run when nothing is left."""
        if not decision.committed:
            return
        skipped: deque[str] = deque()
        while True:
            for node_id in decision.queued:
                self.dispatcher.send(str(run_id), node_id, pure=workflow.nodes[node_id].node_type.pure)
            if decision.remaining is not None and decision.remaining <= 0:
                self.finish(run_id, workflow)
                return
            oplog.nodes_skipped(run_id, decision.skipped)
            skipped.extend(decision.skipped)
            if not skipped:
                return
            source = skipped.popleft()
            decision = self.store.lifecycle.propagate_skip(
                run_id, source, merge_signals(workflow.signals(source, None, skipped=True)))

    def settle_skip(self, run_id: uuid.UUID, version_id: int, node_id: str, body: str = "") -> None:
        """Signal a skipped node's successors (the reconciler's repair after a crash)."""
        workflow = self.versions.get(version_id, body)
        decision = self.store.lifecycle.propagate_skip(
            run_id, node_id, merge_signals(workflow.signals(node_id, None, skipped=True)))
        self._after(run_id, workflow, decision)

    def finish(self, run_id: uuid.UUID, workflow: CompiledWorkflow) -> None:
        """Render the run's outputs from its nodes and mark it succeeded."""
        run_inputs, outputs = self.store.lifecycle.load_outputs(run_id, workflow.output_deps,
                                                                workflow.outputs_need_run_inputs)
        limit = self.settings.run_output_max_bytes
        try:
            # Rendering the outputs gets a node's time bounds too (capped: it is meant to be quick).
            limit_s = min(self.settings.default_node_timeout_s, OUTPUTS_RENDER_S)
            stop_at = time.monotonic() + limit_s
            with deadline(stop_at), self.watchdog.guard(stop_at):
                rendered = workflow.render_outputs(run_inputs or {}, outputs)
            size = json_size(rendered, limit)
            if size > limit:
                raise PermanentNodeError(f"the run outputs are {size:,} bytes or more as JSON, over the limit of "
                                         f"{limit:,} bytes (RELAYFLOW_RUN_OUTPUT_MAX_BYTES)")
        except Exception as exc:  # a template error in `outputs` fails the run, visibly
            self.send_parent(self.store.lifecycle.end_run(
                run_id, "failed", {"code": PermanentNodeError.code, "node_id": None,
                                   "message": f"Rendering the run outputs failed: {exc}"}))
            return
        self.send_parent(self.store.lifecycle.finish_run(run_id, rendered))

    # -- leases ---------------------------------------------------------------------------------
    def inflight_node_rows(self) -> list[int]:
        """Node rows this process is executing now (their leases need renewing)."""
        with self._inflight_lock:
            return list(self._inflight)


def _seconds_until(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return (moment - datetime.now(UTC)).total_seconds()
