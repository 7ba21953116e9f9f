"""In-process doubles of the message hop, for fast lifecycle tests and the benchmarks.

`MemoryDispatcher` holds node messages in memory instead of sending them through Redis, and
`InlineWorker` runs them with a real `Executor` in the calling thread until none is left
(dramatiq's `StubBroker` and `stub_worker` are the model). Everything else is the engine's own:
the store on a real database, claims, commits, skips, joins, retries with their real backoff
(a delayed message waits out its delay in real time, because the database's clock decides
when a retry may be claimed) and, on demand, a reconciler sweep.

What it leaves out is the process: no lease renewal thread, no worker to kill, no Redis to
lose. Tests whose point is those keep real `dramatiq` worker processes. Imported by tests and
`bench`, never by the engine itself.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

from engine.dispatch import Dispatcher
from engine.executor import Executor
from engine.reconciler import Reconciler


class MemoryDispatcher:
    """Keeps `run_node` messages in memory, ordered by when they are due (then by send order).

    `forward`, if given, also receives every message (the benchmarks measure a real send).
    """

    def __init__(self, forward: Dispatcher | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.forward = forward
        self.clock = clock
        self._queue: list[tuple[float, int, str, str, bool]] = []  # (due at, send order, run id, node id, pure)
        self._order = itertools.count()
        self._lock = threading.Lock()

    def send(self, run_id: str, node_id: str, delay_s: float = 0.0, pure: bool = False) -> None:
        """Hold one node message, due after `delay_s` (retries)."""
        with self._lock:
            heapq.heappush(self._queue, (self.clock() + max(0.0, delay_s), next(self._order), str(run_id), node_id,
                                         pure and delay_s <= 0))
        if self.forward is not None:
            self.forward.send(run_id, node_id, delay_s, pure)

    def due_in_s(self) -> float | None:
        """Seconds until the next message is due (0 if one is due now); None when none is held."""
        with self._lock:
            return max(0.0, self._queue[0][0] - self.clock()) if self._queue else None

    def pop_due(self) -> tuple[str, str, bool] | None:
        """The next due message as (run id, node id, pure), removed; None when none is due yet."""
        with self._lock:
            if not self._queue or self._queue[0][0] > self.clock():
                return None
            _, _, run_id, node_id, pure = heapq.heappop(self._queue)
            return run_id, node_id, pure

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)


class InlineWorker:
    """Runs the messages of a `MemoryDispatcher` with a real `Executor`, in the calling thread."""

    def __init__(self, executor: Executor, messages: MemoryDispatcher, reconciler: Reconciler | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.executor = executor
        self.messages = messages
        self.reconciler = reconciler
        self.sleep = sleep

    def run_next(self) -> bool:
        """Run the next due message (claim, execute, commit, send successors); False if none is due."""
        message = self.messages.pop_due()
        if message is None:
            return False
        self.executor.run_node(*message)
        return True

    def drain(self, timeout_s: float = 60.0) -> int:
        """Run messages until none is left, waiting for delayed ones; returns how many ran.

        TimeoutError if work is still held after `timeout_s` (a workflow that never settles).
        """
        stop_at = time.monotonic() + timeout_s
        ran = 0
        while (wait_s := self.messages.due_in_s()) is not None:
            if time.monotonic() + wait_s > stop_at:
                raise TimeoutError(f"{len(self.messages)} node messages still held after {timeout_s:g}s")
            if wait_s > 0:
                self.sleep(wait_s)
            ran += self.run_next()
        return ran

    def sweep(self) -> int:
        """One reconciler sweep (what it re-sends lands here), then drain; returns messages run."""
        if self.reconciler is None:
            raise RuntimeError("this InlineWorker was built without a reconciler")
        self.reconciler.sweep()
        return self.drain()
