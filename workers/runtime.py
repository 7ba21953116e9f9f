"""Per-process worker runtime: the executor, the lease keeper, heartbeat, reconciler and retention threads.

Built in `after_process_boot` (after fork), so no connection is shared between processes. Each
process registers itself in the `workers` table (`<hostname>:<pid>:<6 hex>`), beats every
RELAYFLOW_WORKER_HEARTBEAT_S and removes its row when it stops cleanly; a run's diagnosis reads
those rows (docs/operations.md "Why is a run stuck").
"""
from __future__ import annotations

import logging
import multiprocessing.util
import os
import secrets
import socket
import threading

import dramatiq

from engine import metrics, telemetry
from engine.db import get_engine
from engine.dispatch import DramatiqDispatcher
from engine.executor import Executor
from engine.nodes.code import sandbox_problem
from engine.nodes.sandbox import warn_unsandboxed
from engine.notify import RedisNotifier
from engine.reconciler import Reconciler
from engine.retention import Retention
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
        self.worker_id = new_worker_id()
        self._queues: list[str] = []
        self._heartbeat: threading.Thread | None = None

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
        # The queues this process really consumes (`dramatiq --queues` narrows them): said at once.
        if worker.consumer_whitelist:
            self._queues = sorted(worker.consumer_whitelist)
            self._beat(self.executor(broker))

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        """Start tracing (if configured), the lease keeper and the reconciler in this worker process."""
        telemetry.configure("relayflow-worker", self.settings)  # after the fork: this process's own exporter
        executor = self.executor(broker)
        self.worker_id = new_worker_id()  # after the fork: the parent's pid is not this process's
        executor.worker_id = self.worker_id
        self._queues = sorted(broker.get_declared_queues())
        self._beat(executor)
        # Leave the registry however the process exits cleanly: a SIGTERM sent to the whole group
        # (as platforms do) reaches a worker process twice, and Dramatiq's second-signal handler
        # exits at once, past `after_worker_shutdown`; multiprocessing's exit function still runs
        # this (fork, spawn and forkserver alike). A SIGKILL leaves the row, silent: it looks dead.
        multiprocessing.util.Finalize(None, self._leave, exitpriority=10)
        if self.settings.code_sandbox == "none":
            warn_unsandboxed()  # the operator's opt-out, said loudly at every worker start
        else:
            threading.Thread(target=self._check_sandbox, name="relayflow-sandbox-check", daemon=True).start()
        if self.settings.worker_warm_llm:
            threading.Thread(target=self._warm_llm, args=(executor,), name="relayflow-warm-llm", daemon=True).start()
        reconciler = Reconciler(executor, executor.dispatcher, self.settings)
        self._heartbeat = threading.Thread(target=self._keep_beating, args=(executor,), name="relayflow-heartbeat",
                                           daemon=True)
        self._threads = [
            threading.Thread(target=self._keep_leases, args=(executor,), name="relayflow-leases", daemon=True),
            self._heartbeat,
            threading.Thread(target=reconciler.run_forever, args=(self._stop,), name="relayflow-reconciler",
                             daemon=True),
            threading.Thread(target=Retention(executor.store.lifecycle.engine, self.settings).run_forever,
                             args=(self._stop,), name="relayflow-retention", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if self.settings.metrics_port is not None:
            metrics.serve(self.settings.metrics_port)

    def _warm_llm(self, executor: Executor) -> None:
        """LiteLLM takes seconds to import: pay it now, beside the messages, not in the first LLM node.

        At the normal priority, not niced: the import holds the GIL between switches, and a thread
        the OS rarely schedules cannot hand it back, so a niced warm-up on a busy machine stalled
        every node thread of the process (bench: 2.6x the worker CPU per node for the whole first
        minute). Unniced, node threads get the GIL every switch interval and it ends in seconds.
        """
        try:
            spent_s = executor.models.warm()
            log.info("LiteLLM is warm", extra={"event": "worker.llm_warm", "seconds": round(spent_s, 2)})
        except Exception:  # noqa: BLE001 - a failed warm-up only means the first LLM node pays the import
            log.warning("could not warm LiteLLM up; the first LLM node will", exc_info=True)

    def _check_sandbox(self) -> None:
        """Say at start, not at the first author's run, when code nodes cannot run here."""
        problem = sandbox_problem(self.settings)
        if problem is not None:
            log.error("code nodes will fail on this worker: %s", problem)

    def before_process_stop(self, broker: dramatiq.Broker) -> None:
        """Stop the background threads and leave the worker registry."""
        self._leave()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """A clean stop (SIGTERM): stop the threads and remove this process's `workers` row.

        Here too, not only in `before_process_stop`: Dramatiq 2's CLI never emits that one.
        """
        self._leave()

    def _leave(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=2)  # a beat in flight must not re-insert the row after the delete
        if self._executor is not None and self._executor.worker_id is not None:
            try:
                self._executor.store.diagnosis.drop(self._executor.worker_id)
            except Exception:
                log.warning("could not remove worker %s from the registry", self._executor.worker_id, exc_info=True)
        metrics.process_exited(os.getpid())  # this process's live gauges stop counting
        telemetry.shutdown()  # the worker threads are done: export the spans still buffered (idempotent)

    def _beat(self, executor: Executor) -> None:
        try:
            executor.store.diagnosis.beat(self.worker_id, socket.gethostname(), os.getpid(), self._queues)
        except Exception:
            log.warning("worker heartbeat failed", exc_info=True)

    def _keep_beating(self, executor: Executor) -> None:
        # One small statement per interval: a row silent for 3 intervals reads as a dead worker.
        while not self._stop.wait(self.settings.worker_heartbeat_s):
            self._beat(executor)

    def _keep_leases(self, executor: Executor) -> None:
        # One UPDATE per interval for every node this process runs, so long nodes keep their lease.
        while not self._stop.wait(self.settings.lease_renew_every_s):
            try:
                executor.store.lifecycle.renew_leases(executor.inflight_node_rows(), self.settings.lease_s)
            except Exception:
                log.exception("lease renewal failed")


def new_worker_id() -> str:
    """`<hostname>:<pid>:<6 hex>`: readable, and unique even when a pid is reused."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
