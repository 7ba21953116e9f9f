"""What follows a failed attempt or a crashed worker: a retry, the run's failure, or the run going
on past the node (its `on_error`).

`Failures` is a part of the executor (engine/executor.py), as `Reruns` is of the service: it holds
the executor and reads its store, dispatcher, settings and versions at each call (a test may swap
the settings), and ends as the executor's other handlers do, through its `wake`, `send_parent` and
`_after`.
"""
from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine import metrics, telemetry
from engine.compiler import CompiledNode, CompiledWorkflow
from engine.errors import NodeCrashed, NodeError
from engine.outcomes import merge_signals
from engine.store import Claim

if TYPE_CHECKING:
    from engine.executor import Executor


class Failures:
    """Retries, `on_error` and crashed workers for one executor."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def handle_failure(self, run_id: uuid.UUID, workflow: CompiledWorkflow, node: CompiledNode,
                       claim: Claim, exc: NodeError, report: dict[str, Any] | None = None) -> None:
        """Retry the node, or apply its on_error strategy once retries are spent."""
        error = {"code": exc.code, "kind": exc.kind, "message": exc.message, "attempt": claim.attempt}
        log_entry = [{"attempt": claim.attempt, "error": error, **(report or {}),
                      "started_at": claim.claimed_at.isoformat(), "at": datetime.now(UTC).isoformat()}]
        policy = node.retry
        if exc.retryable and exc.kind in policy.retry_on and claim.attempt < policy.max_attempts:
            self._retry(run_id, node, claim, error, log_entry, report)
        elif node.on_error == "fail":
            self._fail_run(run_id, node, claim, error, log_entry, report)
        else:
            self._continue_after_error(run_id, workflow, node, claim, exc, error, log_entry, report)

    def _retry(self, run_id: uuid.UUID, node: CompiledNode, claim: Claim, error: dict[str, Any],
               log_entry: list[dict[str, Any]], report: dict[str, Any] | None) -> None:
        """Mark the node `retrying` and send its next attempt after the policy's backoff."""
        delay_s = node.retry.delay_s(claim.attempt, random.random())
        log_entry[-1]["backoff_s"] = round(delay_s, 3)  # the wait before the next attempt, in the same write
        scheduled = self.executor.store.lifecycle.schedule_retry(run_id, node.id, claim, error=error, delay_s=delay_s,
                                                                 log=log_entry, report=report)
        _log_failure(run_id, node.id, claim, error, "retry_scheduled" if scheduled else "superseded",
                     delay_s=round(delay_s, 3), max_attempts=node.retry.max_attempts)
        if scheduled:
            metrics.retry_scheduled(node.type_name)
            self.executor.dispatcher.send(str(run_id), node.id, delay_s=delay_s)
            self.executor.wake(claim.space_id)

    def _fail_run(self, run_id: uuid.UUID, node: CompiledNode, claim: Claim, error: dict[str, Any],
                  log_entry: list[dict[str, Any]], report: dict[str, Any] | None) -> None:
        """`on_error: fail`: the node and its run fail (unreached nodes end cancelled)."""
        ended = self.executor.store.lifecycle.fail_run_at_node(run_id, node.id, claim.node_row_id, claim.epoch,
                                                               error=error, log=log_entry, report=report)
        _log_failure(run_id, node.id, claim, error, "run_failed" if ended.changed else "superseded")
        if ended.changed:
            self.executor.send_parent(ended)
            self.executor.wake(claim.space_id)

    def _continue_after_error(self, run_id: uuid.UUID, workflow: CompiledWorkflow, node: CompiledNode,
                              claim: Claim, exc: NodeError, error: dict[str, Any],
                              log_entry: list[dict[str, Any]], report: dict[str, Any] | None) -> None:
        """`on_error: default` (the declared default output) or `branch` (the `error` port): the run goes on."""
        failure = {"code": exc.code, "message": exc.message}
        if node.on_error == "default":
            output, port = {**(node.default_output or {}), "is_success": False, "error": failure}, None
        else:
            output, port = {"is_success": False, "error": failure}, "error"
        decision = self.executor.store.lifecycle.commit_node(
            run_id, node.id, claim, status="failed", output=output, error=error, port=port,
            signals=merge_signals(workflow.signals(node.id, port)), event_type="node.failed",
            event_data={"error": error, "on_error": node.on_error}, log=log_entry, report=report)
        _log_failure(run_id, node.id, claim, error, "continued" if decision.committed else "superseded",
                     on_error=node.on_error)
        if decision.wake:
            self.executor.wake(claim.space_id)
        self.executor._after(run_id, workflow, decision)

    def handle_crash(self, row: Any) -> str:
        """A node's lease expired (its worker died): re-queue it, or fail it after too many crashes.

        Returns what was done: `requeued`, `failed` (as crashed), or `superseded` (another
        process changed the node first)."""
        entry = {"attempt": row.attempts, "at": datetime.now(UTC).isoformat(),
                 "error": {"code": NodeCrashed.code, "kind": "crashed",
                           "message": "The worker running this attempt stopped before finishing it."}}
        if row.crashes + 1 < self.executor.settings.max_crashes:
            if self.executor.store.lifecycle.requeue_crashed(row, [entry]):
                self.executor.dispatcher.send(str(row.run_id), row.node_id)
                return "requeued"
            return "superseded"
        workflow = self.executor.versions.get(row.version_id, row.body)
        claim = Claim(node_row_id=row.id, epoch=row.epoch, attempt=row.attempts, version_id=row.version_id,
                      deadline_at=None, run_inputs=None, dep_outputs={}, space_id=row.space_id, body=row.body)
        self.handle_failure(row.run_id, workflow, workflow.nodes[row.node_id], claim, NodeCrashed(
            f"Node {row.node_id} was lost {row.crashes + 1} times (worker crashed or stalled); giving up."))
        return "failed"


def _log_failure(run_id: uuid.UUID, node_id: str, claim: Claim, error: dict[str, Any], outcome: str,
                 **details: Any) -> None:
    telemetry.node_failed(run_id, node_id, claim, error, outcome, **details)
