"""The reconciler: Postgres is the source of truth, so it repairs what Redis lost.

One leader per sweep (a transaction-scoped Postgres advisory lock): it re-queues nodes whose
lease expired (their worker died), re-sends messages for queued nodes and due retries that
look lost, completes decisions a dying worker left half done (a skip not yet signalled to its
successors, a run whose nodes are all decided but which was not marked finished), and fails
runs past their deadline.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from engine import metrics, oplog, telemetry
from engine.dispatch import Dispatcher
from engine.errors import RunDeadlineExceeded
from engine.executor import Executor
from engine.settings import Settings
from engine.statuses import RunStatus

log = logging.getLogger("relayflow.reconciler")

LEADER_LOCK_KEY = 0x52_46_4C_57  # "RFLW"
WORKER_ROWS_KEPT_S = 86_400.0  # a dead worker's row is kept a day (diagnosis names it meanwhile)
WAKE_BATCH = 1000  # waiting nodes woken per space per sweep, at most (never more than its free slots)


@dataclass(frozen=True)
class SweepReport:
    """What one sweep repaired."""

    leader: bool
    crashed: int = 0
    resent: int = 0
    overdue: int = 0
    repaired: int = 0


class Reconciler:
    """Periodic repair of runs whose messages or workers were lost."""

    def __init__(self, executor: Executor, dispatcher: Dispatcher, settings: Settings) -> None:
        self.executor = executor
        self.store = executor.store
        self.dispatcher = dispatcher
        self.settings = settings

    def sweep(self) -> SweepReport:
        """Run one sweep if this process wins the leader lock."""
        with self.store.lifecycle.engine.begin() as conn:
            if not self.store.lifecycle.try_lead(conn, LEADER_LOCK_KEY):
                return SweepReport(leader=False)
            crashed = self.store.lifecycle.expired_leases()
            for row in crashed:
                crash_action = self.executor.handle_crash(row)
                metrics.crashed(crash_action)
                oplog.lease_expired(row, crash_action, self.settings.max_crashes)
                self.executor.notifier.run_changed(str(row.run_id))
            stale = self.store.lifecycle.stale_queued(self.settings.resend_queued_after_s)
            for run_id, node_id, status in stale:
                self.dispatcher.send(str(run_id), node_id)
                oplog.message_resent(run_id, node_id, status)
                metrics.repaired("message_resent")
            # Waiting nodes of spaces with free slots (a wake lost to a crash, a cancel from the
            # API, a crashed node's slot): after the re-sends, so a lost message is not sent twice.
            self.store.lifecycle.drop_dead_waiters()
            woken = self.store.lifecycle.wake_waiters(None, self.settings.space_max_running_nodes, WAKE_BATCH)
            for run_id, node_id in woken:
                self.dispatcher.send(str(run_id), node_id)
                oplog.waiter_woken(run_id, node_id)
                metrics.repaired("waiter_woken")
            age = self.settings.resend_queued_after_s
            unsettled = self.store.lifecycle.unsettled_skips(age)
            for row in unsettled:
                self.executor.settle_skip(row.run_id, row.version_id, row.node_id, row.body)
                oplog.decision_completed(row.run_id, "skip_signalled", row.node_id)
                metrics.repaired("skip_signalled")
            unfinished = self.store.lifecycle.unfinished_runs(age)
            for row in unfinished:
                self.executor.finish(row.id, self.executor.versions.get(row.version_id, row.body))
                oplog.decision_completed(row.id, "run_finished")
                metrics.repaired("run_finished")
            unwoken = self.store.lifecycle.unwoken_parents()
            for row in unwoken:
                if self.store.lifecycle.wake_parent(row.run_id, row.node_id):
                    self.dispatcher.send(str(row.run_id), row.node_id)
                    oplog.decision_completed(row.run_id, "parent_woken", row.node_id)
                    metrics.repaired("parent_woken")
            orphans = self.store.lifecycle.orphaned_children(age)
            # A batch's items that never started (its attempt crashed before it waited) go in
            # bulk, one statement per attempt; the others one by one, with their descendants.
            for attempt in {(row.parent_run_id, row.parent_node_id, row.parent_epoch) for row in orphans}:
                if self.store.lifecycle.cancel_unstarted_children(*attempt):
                    oplog.decision_completed(attempt[0], "orphans_cancelled", attempt[1])
                    metrics.repaired("orphans_cancelled")
            for row in orphans:
                if (ended := self.store.lifecycle.end_run(row.id, RunStatus.CANCELLED)).changed:
                    telemetry.run_ended(self.store, ended)
                    self.executor.notifier.run_changed(str(row.id))
                    oplog.decision_completed(row.id, "orphan_cancelled")
                    metrics.repaired("orphan_cancelled")
            overdue = self.store.lifecycle.overdue_runs()
            for run_id in overdue:
                self.executor.send_parent(
                    self.store.lifecycle.end_run(run_id, RunStatus.FAILED, RunDeadlineExceeded.run_error(None)))
                self.executor.notifier.run_changed(str(run_id))
                oplog.run_deadline(run_id)
                metrics.repaired("run_deadline")
            self.store.diagnosis.purge(WORKER_ROWS_KEPT_S)  # workers silent for a day are gone for good
        repaired = len(unsettled) + len(unfinished) + len(unwoken) + len(orphans)
        return SweepReport(True, len(crashed), len(stale), len(overdue), repaired)

    def run_forever(self, stop: threading.Event) -> None:
        """Sweep every `reconcile_every_s` until `stop` is set; errors are logged and survived."""
        while not stop.wait(self.settings.reconcile_every_s):
            try:
                self.sweep()
            except Exception:
                log.exception("reconciler sweep failed; retrying next interval")
