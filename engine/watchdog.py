"""The backstop of node timeouts: stops a worker thread that runs past its node's timeout.

Node types keep their timeout cooperatively (sleep steps, httpx deadlines, the template
deadline checked in every sandbox hook). Some work offers no hook: a template loop over a
long string, a slow filter, a library call that ignores its deadline. For those, one
watchdog thread per process raises `NodeOverran` inside the worker thread once the node is
`grace_s` past its timeout, with CPython's asynchronous exception (Dramatiq's
`raise_thread_exception`, the mechanism of its own time limits). The exception is only
raised while the thread is inside `guard()`, i.e. in the node's own work, never in a commit;
a pending one is cancelled when the guarded block ends first. It is delivered between
bytecodes, so a single long C call (one huge regex) finishes before it lands.
"""
from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from engine.errors import NodeTimeout

log = logging.getLogger("relayflow.watchdog")
TICK_S = 0.2


class NodeOverran(NodeTimeout):
    """The node ran past its timeout and was stopped."""


@dataclass(eq=False)
class Guard:
    """One node attempt's work on one thread."""

    thread_id: int
    stop_at: float  # monotonic time after which the watchdog interrupts the thread
    fired: bool = False
    done: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> int:
    # None clears a pending exception (the C API's NULL).
    return int(ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None))


class Watchdog:
    """Interrupts threads whose guarded work passed its stop time."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._guards: set[Guard] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def guard(self, deadline: float) -> Iterator[Guard]:
        """Guard the block: past `deadline + grace_s` (monotonic) NodeOverran is raised inside it."""
        guard = Guard(threading.get_ident(), deadline + self.grace_s)
        with self._lock:
            self._guards.add(guard)
            self._ensure_thread()
        try:
            yield guard
        finally:
            self._leave(guard)

    def _leave(self, guard: Guard) -> None:
        with guard._lock:
            guard.done = True
            if guard.fired:
                _set_async_exc(guard.thread_id, None)  # not yet delivered: never deliver it
        with self._lock:
            self._guards.discard(guard)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="relayflow-watchdog", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(TICK_S)
            now = time.monotonic()
            with self._lock:
                due = [g for g in self._guards if now > g.stop_at]
                self._guards.difference_update(due)
            for guard in due:
                self._fire(guard)

    def _fire(self, guard: Guard) -> None:
        with guard._lock:
            if guard.done or guard.fired:
                return
            guard.fired = True
            if _set_async_exc(guard.thread_id, NodeOverran) != 1:
                log.warning("could not interrupt thread %s", guard.thread_id)
            else:
                log.warning("interrupted thread %s: its node ran past its timeout", guard.thread_id)
