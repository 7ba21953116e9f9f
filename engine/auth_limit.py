"""Failed authentication attempts, counted per client address in Redis across web processes.

After `auth_failure_limit` failures in a fixed window of `auth_failure_window_s`, the address
gets 429 (with Retry-After) until the window ends, for any token, before the token is even
looked up. The success path costs nothing: a valid token is never counted or checked in Redis.
Each process keeps the addresses it knows to be blocked in memory (learnt from the count its
own failures return), so a blocked address costs neither a database lookup nor a Redis trip.
A process that has not yet seen a blocked address learns it at that address's next failure.
If Redis is down the limit is not enforced (authentication itself still is).
"""
from __future__ import annotations

import logging
import math
import threading
import time

import redis

from engine.errors import TooManyFailedLogins

log = logging.getLogger(__name__)
_KEY = "relayflow:auth_failures:{address}:{window}"
_MAX_REMEMBERED = 10_000  # blocked addresses held in memory per process


class FailedAuthLimiter:
    """One web process's view of which addresses failed to authenticate too often."""

    def __init__(self, client: redis.Redis, limit: int, window_s: int) -> None:
        self.client = client
        self.limit = limit
        self.window_s = max(1, int(window_s))
        self._blocked: dict[str, float] = {}  # address -> monotonic end of its block
        self._lock = threading.Lock()

    def check(self, address: str) -> None:
        """Raise 429 if this process knows `address` to be blocked (no I/O)."""
        until = self._blocked.get(address)
        if until is None:
            return
        left = until - time.monotonic()
        if left <= 0:
            with self._lock:
                self._blocked.pop(address, None)
            return
        raise self._refusal(left)

    def failed(self, address: str) -> None:
        """Count a failure of `address`; raise 429 if it reached the limit (else return: say 401)."""
        now = time.time()
        window = int(now // self.window_s)
        key = _KEY.format(address=address, window=window)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, self.window_s + 1)
            count = int(pipe.execute()[0])
        except redis.RedisError as exc:
            log.warning("failed-authentication limit not enforced (Redis: %s)", type(exc).__name__)
            return
        if count <= self.limit:
            return
        left = (window + 1) * self.window_s - now
        with self._lock:
            if len(self._blocked) >= _MAX_REMEMBERED:
                self._blocked.clear()  # an address flood: Redis still counts, memory stays bounded
            self._blocked[address] = time.monotonic() + left
        log.warning("address %s blocked for %.0f s after %d failed authentication attempts", address, left, count)
        raise self._refusal(left)

    def _refusal(self, left_s: float) -> TooManyFailedLogins:
        wait = max(1, math.ceil(left_s))
        return TooManyFailedLogins(
            f"Too many failed authentication attempts from this address ({self.limit} in {self.window_s} s); "
            f"try again in {wait} s.", retry_after_s=wait)
