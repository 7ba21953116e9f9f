"""Following a run: waiting for it to settle (sync mode) and its event feed (Server-Sent Events).

Postgres holds the events; the RunWatcher (Redis pub/sub) only wakes the follower, which then
reads what is new. Nothing here polls in a tight loop: a follower reads the database when it
is woken, and otherwise every few keep-alive intervals as a safety net for a lost wake-up.
"""
from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from engine.errors import RunNotFound
from engine.notify import RunWatcher
from engine.statuses import FINAL_STATUSES, SETTLED_STATUSES
from engine.store import Store

FINAL_EVENTS = frozenset({"run.succeeded", "run.failed", "run.cancelled"})
_PAGE = 500
# A quiet stream re-reads the database every this many keep-alives (a minute by default): with a
# thousand streams open, a read per keep-alive was most of their idle cost.
_REREAD_EVERY = 4


class RunFollower:
    """Waits on runs and streams their events."""

    def __init__(self, store: Store, watcher: RunWatcher) -> None:
        self.store = store
        self.watcher = watcher

    def wait_settled(self, space_id: str, run_id: str, wait_s: float, *,
                     settled: frozenset[str] = SETTLED_STATUSES, recheck_s: float = 5.0) -> str:
        """Block up to `wait_s` until the run's status is in `settled`; returns the last status seen."""
        rid = _uuid(run_id)
        seen = self.watcher.mark(run_id)
        try:
            deadline = time.monotonic() + wait_s
            while True:
                status = self.store.views.run_status(rid)
                if status is None:
                    raise RunNotFound(f"Run {run_id} not found.")
                left = deadline - time.monotonic()
                if status in settled or left <= 0:
                    return status
                seen = self.watcher.wait(run_id, seen, min(left, recheck_s))
        finally:
            self.watcher.release(run_id)

    def events(self, space_id: str, run_id: str, after_id: int, *, keepalive_s: float,
               max_s: float, until: frozenset[str] = FINAL_EVENTS, check: Callable[[], bool] | None = None,
               check_every_s: float = 3.0) -> Iterator[dict[str, Any] | None]:
        """The run's events after `after_id`, then live ones; None means "send a keep-alive".

        Ends after an event whose type is in `until` (the run's final event by default), at once
        if the run has already ended and nothing is left to send, after `max_s` (the client
        reconnects with Last-Event-ID and loses nothing), or as soon as `check()` (called every
        `check_every_s`, without touching the database here) returns False.
        """
        rid = _uuid(run_id)
        if self.store.views.run_status(rid, space_id) is None:
            raise RunNotFound(f"Run {run_id} not found.")
        return self._feed(rid, run_id, after_id, keepalive_s, max_s, until, check, check_every_s)

    def _feed(self, rid: uuid.UUID, run_id: str, after_id: int, keepalive_s: float, max_s: float,
              until: frozenset[str], check: Callable[[], bool] | None,
              check_every_s: float) -> Iterator[dict[str, Any] | None]:
        seen = self.watcher.mark(run_id)
        try:
            ends_at = time.monotonic() + max_s
            # The first keep-alive comes after a random part of the interval: streams opened
            # together (a reconnect storm) would otherwise wake, write and re-read together.
            last_sent = time.monotonic() - random.uniform(0.0, keepalive_s / 2)
            next_check = time.monotonic() + (check_every_s if check is not None else float("inf"))
            first = True
            quiet = 0  # keep-alives sent since the last wake-up
            while True:
                batch = self.store.views.events_after(rid, after_id, _PAGE)
                for event in batch:
                    after_id = event["id"]
                    yield event
                    if event["type"] in until:
                        return
                if batch:
                    last_sent = time.monotonic()
                    if len(batch) == _PAGE:
                        continue
                elif first and until == FINAL_EVENTS and self.store.views.run_status(rid) in FINAL_STATUSES:
                    return  # the client has every event already (later, the final event ends the feed)
                first = False
                # Wait for news; re-read when woken, and every few keep-alives in case a wake-up
                # was lost (a publisher's Redis failure; a subscriber's reconnect wakes everyone).
                # Checks in between cost the database nothing here.
                while True:
                    now = time.monotonic()
                    if now >= ends_at:
                        return
                    if now >= next_check:
                        if check is not None and not check():
                            return
                        next_check = now + check_every_s
                    wait_s = max(0.0, min(keepalive_s - (now - last_sent), ends_at - now, next_check - now))
                    new_seen = self.watcher.wait(run_id, seen, wait_s)
                    if new_seen != seen:
                        seen, quiet = new_seen, 0
                        break
                    if time.monotonic() - last_sent >= keepalive_s - 0.01:
                        yield None
                        last_sent = time.monotonic()
                        quiet += 1
                        if quiet % _REREAD_EVERY == 0:
                            break
        finally:
            self.watcher.release(run_id)


def _uuid(run_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(run_id))
    except ValueError:
        raise RunNotFound(f"Run {run_id} not found.") from None
