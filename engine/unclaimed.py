"""The unclaimed path of a pure node: execute it before claiming it, and commit it only if nobody
touched it meanwhile (engine/store/sql/unclaimed.py says why that keeps the claim's guarantees).

`UnclaimedPath` is a mixin of `Executor` (engine/executor.py), not a part it holds as it holds
`Failures`: this path is the executor's own attempt, begun another way. It uses the executor's
steps (the time limit, the attempt, settling an outcome, what follows a commit), its store,
settings, versions and notifier, and its worker id (set after the executor is made), so a separate
object would reach into nine of the executor's names, four of them private. The names it takes
from the executor are declared on the class.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from engine import metrics, telemetry
from engine.compiler import CompiledNode, CompiledWorkflow
from engine.errors import NodeTimeout
from engine.notify import Notifier
from engine.outcomes import Failed, Outcome, Succeeded, merge_signals, succeeded_event
from engine.settings import Settings
from engine.store import Claim, Decision, Store
from engine.versions import VersionCache


class UnclaimedPath:
    """Runs a still untouched pure node without claiming it; mixed into `Executor`."""

    # the executor's attributes (set in `Executor.__init__`; `worker_id` by the worker runtime)
    store: Store
    settings: Settings
    versions: VersionCache
    notifier: Notifier
    worker_id: str | None

    if TYPE_CHECKING:  # the executor's steps (engine/executor.py)
        def _claim(self, rid: uuid.UUID, node_id: str) -> Claim | None: ...

        def _time_limit(self, node: CompiledNode, deadline_at: datetime | None) -> tuple[float, bool] | None: ...

        def _attempt(self, run_id: uuid.UUID, workflow: CompiledWorkflow, node: CompiledNode, claim: Claim,
                     timeout_s: float, deadline_bound: bool) -> Outcome: ...

        def _settle(self, run_id: uuid.UUID, workflow: CompiledWorkflow, node: CompiledNode, claim: Claim,
                    outcome: Outcome) -> None: ...

        def _after(self, run_id: uuid.UUID, workflow: CompiledWorkflow, decision: Decision) -> None: ...

    def _run_unclaimed(self, rid: uuid.UUID, node_id: str) -> bool:
        """Execute a pure node before claiming it and commit it if nobody touched it meanwhile
        (engine/store/sql/unclaimed.py). False, having changed nothing, when it is not such a node
        now (claimed or re-sent before, waitlisted, its capped space full, its run past its
        deadline) or, in a capped space, when it ran past the budget: the caller claims it (a pure
        node computes the same again). An attempt that did not succeed is claimed then and
        settled as that attempt, so failures, retries and `on_error` are the claimed path's."""
        budget_s = self.settings.unclaimed_budget_ms / 1000
        found = self.store.unclaimed.peek(rid, node_id, self.settings.space_max_running_nodes, budget_s > 0)
        if found is None:
            return False
        peeked = found.claim
        workflow = self.versions.get(peeked.version_id, peeked.body)
        node = workflow.nodes[node_id]
        limit = self._time_limit(node, peeked.deadline_at)
        if not node.node_type.pure or limit is None:
            return False
        timeout_s, deadline_bound = limit
        budget_bound = found.capped and budget_s < timeout_s
        if budget_bound:
            timeout_s, deadline_bound = budget_s, False
        telemetry.node_started(self.store, rid, node, peeked, log_lines=False)
        try:
            started = time.monotonic()
            outcome = self._attempt(rid, workflow, node, peeked, timeout_s, deadline_bound)
            if budget_bound and isinstance(outcome, Failed) and isinstance(outcome.error, NodeTimeout):
                return False  # its space's budget, not its own timeout, stopped it: claimed, it runs in full
            metrics.attempt_ended(node.type_name, outcome, time.monotonic() - started)
            if isinstance(outcome, Succeeded):
                self._commit_unclaimed(rid, workflow, node, peeked, outcome)
                return True
            claim = self._claim(rid, node_id)
            if claim is not None:  # None: another delivery took it, or its space is full now (waitlisted)
                telemetry.node_started(self.store, rid, node, claim, span=False)
                self._settle(rid, workflow, node, claim, outcome)
                self.notifier.run_changed(str(rid))
            return True
        finally:
            telemetry.node_finished()

    def _commit_unclaimed(self, rid: uuid.UUID, workflow: CompiledWorkflow, node: CompiledNode, peeked: Claim,
                          done: Succeeded) -> None:
        committed = self.store.unclaimed.commit(
            rid, node.id, peeked, output=done.outputs, port=done.port,
            signals=merge_signals(workflow.signals(node.id, done.port)),
            event_data=succeeded_event(node, 1, done.port, done.outputs), worker=self.worker_id)
        if committed.decision.committed:
            # its start is logged once it is recorded (with the run's, if it was the first node)
            telemetry.node_started(self.store, rid, node, replace(peeked, run_started=committed.run_started),
                                   span=False)
        telemetry.node_settled(rid, node, peeked, "succeeded" if committed.decision.committed else "superseded",
                               port=done.port)
        self._after(rid, workflow, committed.decision)
        if committed.decision.committed:  # after `_after`: the run's end, if this was its last node, too
            self.notifier.run_changed(str(rid))
