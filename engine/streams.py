"""Open event streams: a per-token cap counted across every web process, and token re-checks.

A stream holds a *slot*: a member of the Redis sorted set `relayflow:<queue>:streams:<token_id>`
whose score is when the slot expires. Opening takes a slot atomically (a Lua script drops the
expired ones, counts, adds) or is refused with TooManyStreams (429) naming the limit and its
setting; closing removes it. Each web process renews its own slots in one pipeline every third
of `stream_slot_ttl_s`, so a killed web process's slots lapse after `stream_slot_ttl_s` instead
of counting against the token for ever.

The same tick re-reads, in one query, the tokens of every stream open in this process: a stream
whose token was revoked (or has expired, or was deleted) learns it within `stream_recheck_s` and
ends. Cost per process and tick: one indexed SELECT and one Redis pipeline, whatever the number
of open streams.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

import redis

from engine import tokens
from engine.errors import ServiceUnavailable, TooManyStreams
from engine.store import Store

log = logging.getLogger("relayflow.streams")
LIMIT_SETTING = "RELAYFLOW_MAX_STREAMS_PER_TOKEN"

# KEYS[1] the token's set; ARGV: now (s), expires_at (s), limit, member, key ttl (ms).
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


@dataclass
class StreamLease:
    """One open stream's slot; `check()` says whether the stream may go on."""

    registry: StreamRegistry
    token_id: int
    slot: str
    reason: str | None = None  # why the stream was closed early (its token is no longer valid)
    _released: bool = field(default=False, repr=False)

    def check(self) -> bool:
        """False once the token is revoked, expired or deleted (`reason` says which)."""
        self.reason = self.registry.invalid_reason(self.token_id)
        return self.reason is None

    def release(self) -> None:
        """Give the slot back (idempotent; called when the response closes)."""
        if not self._released:
            self._released = True
            self.registry.release(self)


class StreamRegistry:
    """This process's open streams: their slots in Redis and their tokens' validity."""

    def __init__(self, store: Store, client: redis.Redis, queue_name: str, *, limit: int,
                 recheck_s: float, slot_ttl_s: float) -> None:
        self.store = store
        self.client = client
        self.prefix = f"relayflow:{queue_name}:streams:"
        self.limit = limit
        self.recheck_s = recheck_s
        self.slot_ttl_s = max(slot_ttl_s, 3 * recheck_s)  # a live slot must never lapse between renewals
        self._acquire = client.register_script(_ACQUIRE)
        self._open: dict[str, StreamLease] = {}
        self._invalid: dict[int, str] = {}
        self._ticked_at = self._renewed_at = time.monotonic()
        self._lock = threading.Lock()
        self._tick_lock = threading.Lock()

    def open(self, token_id: int) -> StreamLease:
        """Take a slot for a new stream of `token_id`, or raise TooManyStreams (429)."""
        lease = StreamLease(self, token_id, uuid.uuid4().hex)
        if self.limit > 0:
            now = time.time()
            try:
                taken = self._acquire(keys=[self.prefix + str(token_id)],
                                      args=[now, now + self.slot_ttl_s, self.limit, lease.slot,
                                            int(self.slot_ttl_s * 1000)])
            except redis.RedisError as exc:
                # fail closed: without Redis the cap cannot be counted (and streams get no wake-ups)
                raise ServiceUnavailable("Redis is unavailable: event streams cannot be opened now.") from exc
            if not taken:
                raise TooManyStreams(
                    f"This token already holds {self.limit} open event streams, the most one token may hold "
                    f"({LIMIT_SETTING}={self.limit}). Close one, or wait for one to end.",
                    limit=self.limit, setting=LIMIT_SETTING)
        with self._lock:
            self._open[lease.slot] = lease
        return lease

    def release(self, lease: StreamLease) -> None:
        """Forget a stream and free its slot."""
        with self._lock:
            self._open.pop(lease.slot, None)
        if self.limit > 0:
            try:
                self.client.zrem(self.prefix + str(lease.token_id), lease.slot)
            except redis.RedisError:
                log.warning("could not free stream slot %s; it lapses in %.0fs", lease.slot, self.slot_ttl_s)

    def invalid_reason(self, token_id: int) -> str | None:
        """Why `token_id` may no longer stream (None: it may), as of the last tick."""
        if time.monotonic() - self._ticked_at >= self.recheck_s:
            self.tick()
        return self._invalid.get(token_id)

    def tick(self) -> None:
        """Re-check the tokens of this process's streams and renew their slots (one caller at a time)."""
        if not self._tick_lock.acquire(blocking=False):
            return  # another stream is ticking; use what the last tick found
        try:
            if time.monotonic() - self._ticked_at < self.recheck_s:
                return
            with self._lock:
                leases = list(self._open.values())
            self._invalid = tokens.invalid_tokens(self.store, {lease.token_id for lease in leases})
            self._ticked_at = time.monotonic()
            if self._ticked_at - self._renewed_at >= self.slot_ttl_s / 3:  # three chances before a slot lapses
                self._renew(leases)
                self._renewed_at = self._ticked_at
        except Exception:  # a database or Redis hiccup must not end every stream; retry next tick
            log.warning("stream re-check failed; retrying in %.1fs", self.recheck_s, exc_info=True)
            self._ticked_at = time.monotonic()
        finally:
            self._tick_lock.release()

    def _renew(self, leases: list[StreamLease]) -> None:
        if self.limit <= 0 or not leases:
            return
        expires_at = time.time() + self.slot_ttl_s
        with self.client.pipeline(transaction=False) as pipe:
            for lease in leases:
                key = self.prefix + str(lease.token_id)
                pipe.zadd(key, {lease.slot: expires_at}, xx=True)
                pipe.pexpire(key, int(self.slot_ttl_s * 1000))
            pipe.execute()

    def count(self, token_id: int) -> int:
        """Live slots of a token across every web process (for tests and operators)."""
        return int(self.client.zcount(self.prefix + str(token_id), time.time(), "+inf"))
