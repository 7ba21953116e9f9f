"""Wake-ups for whoever follows a run (event streams, sync waits): Redis pub/sub.

The events themselves live in Postgres (`run_events`); a notification only says "run X has
new events", so a lost one costs a waiter its next keep-alive interval, never an event.
One listener thread per process fans notifications out to its waiters: a thousand open
streams cost one Redis connection, not a thousand.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis
import redis.client

from engine import oplog

log = logging.getLogger("relayflow.notify")


def channel_name(queue_name: str) -> str:
    """The pub/sub channel of one deployment (channels ignore Redis database numbers)."""
    return f"relayflow:{queue_name}:run-events"


class Notifier(Protocol):
    """Something that announces that a run has new events."""

    def run_changed(self, run_id: str) -> None: ...


class NullNotifier:
    """Announces nothing (tools and tests that have no followers)."""

    def run_changed(self, run_id: str) -> None:
        """Do nothing."""


class RedisNotifier:
    """PUBLISHes run ids on the deployment's channel, coalesced: one command per `linger_s`.

    A node makes two announcements (claimed, decided) a millisecond or two apart, and a busy
    worker process makes hundreds a second: a background thread gathers them for a few
    milliseconds and sends the distinct ids as one space-separated message. That caps the
    Redis commands at 1/`linger_s` per process whatever the node rate, for a few milliseconds
    of delay to followers. Failures are logged, never raised: followers re-read on a timer.
    """

    def __init__(self, client: redis.Redis, queue_name: str, linger_s: float = 0.005) -> None:
        self.client = client
        self.channel = channel_name(queue_name)
        self.linger_s = linger_s
        self._pending: set[str] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def run_changed(self, run_id: str) -> None:
        """Announce new events of `run_id` (sent within `linger_s`)."""
        with self._cond:
            if self._thread is None or self._pid != os.getpid():  # first use, or a forked child
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._publish_forever, name="relayflow-notifier",
                                                daemon=True)
                self._thread.start()
            if not self._pending:  # the publisher waits only while nothing is pending
                self._cond.notify()
            self._pending.add(str(run_id))

    def _publish_forever(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
            time.sleep(self.linger_s)  # let the rest of this burst arrive
            with self._cond:
                batch, self._pending = self._pending, set()
            try:
                self.client.publish(self.channel, " ".join(sorted(batch)))
            except redis.ConnectionError as exc:
                oplog.connection_lost("redis", exc, f"wake-ups of {len(batch)} runs dropped; followers re-read on a timer")
            except redis.RedisError:
                log.warning("could not publish wake-ups for %d runs", len(batch), exc_info=True)


class _ResubscribingPubSub(redis.client.PubSub):
    """redis-py's subscription, saying when redis-py re-established it itself: its retries reconnect
    and resubscribe without raising, and what was published in between reached nobody."""

    def __init__(self, connection_pool: Any, on_resubscribed: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(connection_pool, **kwargs)
        self._on_resubscribed = on_resubscribed

    def on_connect(self, connection: Any) -> None:
        super().on_connect(connection)
        if self.channels:  # a reconnect (the first connection comes before any channel)
            self._on_resubscribed()


class RunWatcher:
    """A process-wide subscriber: `wait(run_id, seen)` blocks until the run's counter moves past `seen`.

    Usage: `seen = watcher.mark(run_id)`, read the database, then `watcher.wait(run_id, seen, t)`;
    a notification that lands between the read and the wait is not missed.
    """

    def __init__(self, client: redis.Redis, queue_name: str) -> None:
        self.client = client
        self.channel = channel_name(queue_name)
        self._counters: dict[str, int] = {}
        self._watchers: dict[str, int] = {}
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        # One condition per watched run, sharing the lock: a wake-up for run X wakes X's
        # waiters only. One shared condition woke all of a process's (up to thousands of)
        # streams for every message, each to find its own run unchanged.
        self._runs: dict[str, threading.Condition] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._connected = threading.Event()

    def start(self) -> None:
        """Start the listener thread (idempotent)."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen, name="relayflow-watcher", daemon=True)
                self._thread.start()
        self._connected.wait(timeout=2.0)

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop the listener thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def mark(self, run_id: str) -> int:
        """Register interest in a run and return its current counter."""
        self.start()
        with self._cond:
            self._watchers[run_id] = self._watchers.get(run_id, 0) + 1
            if run_id not in self._runs:
                self._runs[run_id] = threading.Condition(self._lock)
            return self._counters.get(run_id, 0)

    def release(self, run_id: str) -> None:
        """Drop interest in a run (forget its counter when nobody watches)."""
        with self._cond:
            left = self._watchers.get(run_id, 1) - 1
            if left <= 0:
                self._watchers.pop(run_id, None)
                self._counters.pop(run_id, None)
                self._runs.pop(run_id, None)
            else:
                self._watchers[run_id] = left

    def wait(self, run_id: str, seen: int, timeout_s: float) -> int:
        """Block until the run's counter differs from `seen` or `timeout_s` passes; returns the counter."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            cond = self._runs.get(run_id) or self._cond  # not marked: woken by any run (tests, tools)
            while self._counters.get(run_id, 0) == seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                cond.wait(left)
            return self._counters.get(run_id, 0)

    def _listen(self) -> None:
        backoff_s = 0.1
        lost = False
        while not self._stop.is_set():
            pubsub = _ResubscribingPubSub(self.client.connection_pool, self._bump_all, ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                self._connected.set()
                backoff_s = 0.1
                if lost:
                    # What was published between the loss and this subscription reached nobody: wake
                    # every waiter once wake-ups flow again (not at the loss: a waiter that re-read
                    # then would sleep through what ended in the gap until its timer).
                    lost = False
                    self._bump_all()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        data = message["data"]
                        self._bump((data.decode() if isinstance(data, bytes) else str(data)).split())
            except redis.RedisError:
                log.warning("run watcher lost Redis; reconnecting in %.1fs", backoff_s, exc_info=True)
                self._connected.set()  # waiters fall back to their timers meanwhile
                lost = True
                time.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
            finally:
                try:
                    pubsub.close()
                except redis.RedisError:
                    pass

    def _bump(self, run_ids: list[str]) -> None:
        with self._cond:
            for run_id in run_ids:
                if run_id in self._watchers:
                    self._counters[run_id] = self._counters.get(run_id, 0) + 1
                    self._runs[run_id].notify_all()
            self._cond.notify_all()  # waiters on runs nobody marked (none in the API)

    def _bump_all(self) -> None:
        # Notifications may have been missed while disconnected: wake everyone to re-read.
        with self._cond:
            for run_id in self._watchers:
                self._counters[run_id] = self._counters.get(run_id, 0) + 1
                self._runs[run_id].notify_all()
            self._cond.notify_all()
