"""Per-process worker runtime: the executor, the lease keeper and the reconciler threads.

Built in `after_process_boot` (after fork), so no connection is shared between processes.
"""
from __future__ import annotations

import logging
import os
import threading

import dramatiq

from engine import metrics
from engine.db import get_engine
from engine.dispatch import DramatiqDispatcher
from engine.executor import Executor
from engine.nodes.code import sandbox_problem
from engine.nodes.sandbox import warn_unsandboxed
from engine.notify import RedisNotifier
from engine.reconciler import Reconciler
from engine.settings import Settings
from engine.store import Store

log = logging.getLogger("relayflow.worker")


class WorkerRuntime(dramatiq.Middleware):
    """Owns the executor of this worker process and its background threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._executor: Executor | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def executor(self, broker: dramatiq.Broker | None = None) -> Executor:
        """This process's executor (created on first use)."""
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    store = Store.from_engine(get_engine(self.settings, pre_ping=False))
                    broker = broker or dramatiq.get_broker()
                    dispatcher = DramatiqDispatcher(broker, self.settings.queue_name)
                    notifier = RedisNotifier(broker.client, self.settings.queue_name)  # type: ignore[attr-defined]
                    self._executor = Executor(store, dispatcher, self.settings, notifier)
        return self._executor

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Hold one message per thread (unless `dramatiq_queue_prefetch` says otherwise); poll often.

        Dramatiq prefetches two per thread by default: a node prefetched behind a long one
        would wait while another worker process sits idle.
        """
        if not os.environ.get("dramatiq_queue_prefetch"):
            worker.queue_prefetch = worker.worker_threads
        # An idle consumer polls Redis with a backoff capped by this timeout (Dramatiq: 1 s), so
        # a node sent to an idle worker could wait up to that long before it starts.
        worker.worker_timeout = self.settings.queue_poll_max_ms

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        """Start the lease keeper and the reconciler in this worker process."""
        executor = self.executor(broker)
        if self.settings.code_sandbox == "none":
            warn_unsandboxed()  # the operator's opt-out, said loudly at every worker start
        else:
            threading.Thread(target=self._check_sandbox, name="relayflow-sandbox-check", daemon=True).start()
        reconciler = Reconciler(executor, executor.dispatcher, self.settings)
        self._threads = [
            threading.Thread(target=self._keep_leases, args=(executor,), name="relayflow-leases", daemon=True),
            threading.Thread(target=reconciler.run_forever, args=(self._stop,), name="relayflow-reconciler",
                             daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if self.settings.metrics_port is not None:
            metrics.serve(self.settings.metrics_port)

    def _check_sandbox(self) -> None:
        """Say at start, not at the first author's run, when code nodes cannot run here."""
        problem = sandbox_problem(self.settings)
        if problem is not None:
            log.error("code nodes will fail on this worker: %s", problem)

    def before_process_stop(self, broker: dramatiq.Broker) -> None:
        """Stop the background threads; this process's live gauges stop counting."""
        self._stop.set()
        metrics.process_exited(os.getpid())

    def _keep_leases(self, executor: Executor) -> None:
        # One UPDATE per interval for every node this process runs, so long nodes keep their lease.
        while not self._stop.wait(self.settings.lease_renew_every_s):
            try:
                executor.store.lifecycle.renew_leases(executor.inflight_node_rows(), self.settings.lease_s)
            except Exception:
                log.exception("lease renewal failed")

