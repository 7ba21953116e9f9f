"""Retention: delete ended runs older than their space's retention, in small batches, off the hot path.

Every worker process runs `Retention.run_forever` in a thread; every `retention_every_s` it
sweeps if it wins the sweep's advisory lock, which each batch takes again in its own
transaction: two processes never delete at once, and a sweep stops at the first batch whose lock
another process holds (that process goes on). A sweep deletes batches of `retention_batch`
top-level runs, oldest first, each with its whole tree (engine/store/sql/retention.py), and rests
`retention_pause_s` between batches so that the deletes never hold the database for long while
nodes run; it ends when no expired run is left, or when the process stops.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import Engine

from engine import oplog
from engine.settings import Settings
from engine.store.retention import Deleted, Expired, RetentionStore

log = logging.getLogger("relayflow.retention")


@dataclass(frozen=True)
class SweepReport:
    """What one sweep did: whether it held the lock at its first batch, its batches and what they deleted."""

    leader: bool
    batches: int = 0
    deleted: Deleted = field(default_factory=Deleted)
    elapsed_s: float = 0.0


class Retention:
    """The retention sweep of one process."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.store = RetentionStore(engine)
        self.settings = settings

    def sweep(self, stop: threading.Event | None = None) -> SweepReport:
        """Delete expired runs batch by batch until none is left, the lock is lost or `stop` is set."""
        stop = stop or threading.Event()
        batch = self.settings.retention_batch
        total, batches, started = Deleted(), 0, time.monotonic()
        while not stop.is_set():
            began = time.monotonic()
            deleted = self.store.delete_batch(self.settings.retention_days, batch)
            if deleted is None:  # another process sweeps now
                if batches == 0:
                    return SweepReport(leader=False)
                break
            batches += 1
            total += deleted
            if deleted.runs:
                oplog.retention_deleted(deleted, 1000 * (time.monotonic() - began))
            # A short batch was the last; one that deleted no tree picked only trees with a live
            # run (kept until the reconciler ends it), which the next batch would pick again.
            if deleted.picked < batch or deleted.roots == 0:
                break
            if stop.wait(self.settings.retention_pause_s):
                break
        return SweepReport(True, batches, total, time.monotonic() - started)

    def expired(self) -> Expired:
        """What a sweep would delete now (the dry run)."""
        return self.store.expired(self.settings.retention_days)

    def run_forever(self, stop: threading.Event) -> None:
        """Sweep every `retention_every_s` until `stop` is set; errors are logged and survived."""
        while not stop.wait(self.settings.retention_every_s):
            try:
                self.sweep(stop)
            except Exception:
                log.exception("retention sweep failed; retrying next interval")
