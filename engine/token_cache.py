"""A web process's cache of verified tokens, so a request costs no token lookup.

Keyed by the token's hash; an entry lives `ttl_s` (RELAYFLOW_TOKEN_CACHE_S). What it keeps true:

- **A revoked token is refused by every web process within `recheck_s` (0.5 s; the promise is a
  second) of the revocation's commit, whatever happens to Redis.** Postgres decides, not Redis: an entry is served only while
  the token table's *generation* (count of tokens, count of revoked ones, newest id; read in the
  same statement as the entry) equals the generation this process read less than `recheck_s` ago.
  Every revocation raises it (revoked_at is never cleared), so the first request after a
  revocation that finds the reading stale re-reads it (one cheap statement, at most once per
  `recheck_s` per process), sees it moved and looks its token up afresh.
- **Usually within milliseconds**: a revocation is announced on Redis pub/sub (channel
  `relayflow:<queue>:tokens`); each process's listener marks its reading stale, so the next
  request re-checks. A lost message, a restarted or unreachable Redis costs only that speed:
  the bound above needs no message (and the listener also re-checks after it reconnects).
- **Expiry is exact**: checked against the clock on every request, cached or not.
- **`last_used_at` costs no write per request**: a lookup records it at most once a minute, and
  a cached token is looked up once per `ttl_s` (so it lags by at most `ttl_s` + 1 minute).
Why not a short TTL alone: a 1 s TTL would cost every token one lookup per second per process,
no cache at all for a client polling once a second; the generation costs one statement per
second per process whatever the number of tokens. Why not a counter in Redis: a revocation whose
INCR was lost (Redis down at that moment, the process killed between commit and INCR) would
never reach the caches.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from engine.tokens import Principal, bearer_token, hash_token, principal_of

if TYPE_CHECKING:
    from engine.store.catalog import CatalogStore, TokenRecord

log = logging.getLogger("relayflow.tokens")
Generation = tuple[int, int, int]


def channel_name(queue_name: str) -> str:
    """The pub/sub channel where one deployment's revocations are announced."""
    return f"relayflow:{queue_name}:tokens"


def announce_revocation(client: redis.Redis, queue_name: str, token_id: int) -> None:
    """Tell every web process a token was revoked (best effort: the generation check is the bound)."""
    try:
        client.publish(channel_name(queue_name), str(token_id))
    except redis.RedisError as exc:
        log.warning("could not announce the revocation of token %s (%s); web processes refuse it within "
                    "RELAYFLOW_TOKEN_RECHECK_S all the same", token_id, exc)


@dataclass(frozen=True)
class _Entry:
    record: TokenRecord
    generation: Generation
    cached_at: float  # monotonic


class TokenCache:
    """Verified tokens of one process; `principal(header)` is `engine.tokens.authenticate`, cached."""

    def __init__(self, catalog: CatalogStore, client: redis.Redis | None, queue_name: str, ttl_s: float,
                 recheck_s: float = 1.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.catalog = catalog
        self.client = client
        self.queue_name = queue_name
        self.channel = channel_name(queue_name)
        self.ttl_s = ttl_s
        self.recheck_s = recheck_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._generation: Generation | None = None
        self._read_at = -math.inf  # when the reading of `_generation` began (monotonic)
        self._stale_since = -math.inf  # a reading that began before this is not trusted
        self._check_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()

    def principal(self, header: str | None) -> Principal:
        """Who the `Authorization` header acts as, or Unauthorized saying why."""
        token_hash = hash_token(bearer_token(header))
        if self.ttl_s <= 0:
            return principal_of(self.catalog.use_token(token_hash))
        self._start_listener()
        entry = self._entries.get(token_hash)
        if entry is not None and self.clock() - entry.cached_at < self.ttl_s \
                and entry.generation == self._fresh_generation():
            return principal_of(entry.record)  # expiry against the clock, now
        started = self.clock()
        record, generation = self.catalog.use_token_cached(token_hash)
        self._note(generation, started)
        if record is None:
            self._entries.pop(token_hash, None)
        else:
            if len(self._entries) >= self.max_entries and token_hash not in self._entries:
                self._entries.pop(next(iter(self._entries)))
            self._entries[token_hash] = _Entry(record, generation, started)
        return principal_of(record)

    def stale(self) -> None:
        """Distrust the current reading: the next request re-reads the generation (a revocation was announced)."""
        self._stale_since = self.clock()

    def revoked(self, token_id: int) -> None:
        """A token was just revoked here: stop serving it in this process at once, and tell the others."""
        self.stale()
        if self.client is not None:
            announce_revocation(self.client, self.queue_name, token_id)

    def close(self) -> None:
        """Stop the listener (tests, shutdown)."""
        self._stop.set()
        if self._listener is not None:
            self._listener.join(3.0)

    def _fresh_generation(self) -> Generation | None:
        """The generation as read less than `recheck_s` ago (reading it now if not)."""
        if self._fresh():
            return self._generation
        with self._check_lock:  # one reader per process; the requests that queued behind it reuse its reading
            if not self._fresh():
                started = self.clock()
                self._note(self.catalog.token_generation(), started)
        return self._generation

    def _fresh(self) -> bool:
        return self._read_at > self._stale_since and self.clock() - self._read_at < self.recheck_s

    def _note(self, generation: Generation, started: float) -> None:
        # A reading that began before the current one may predate a revocation the current one saw.
        if started >= self._read_at:
            self._generation, self._read_at = generation, started

    def _start_listener(self) -> None:
        if self._listener is not None or self.client is None:
            return
        with self._check_lock:
            if self._listener is None:
                self._listener = threading.Thread(target=self._listen, name="relayflow-token-cache", daemon=True)
                self._listener.start()

    def _listen(self) -> None:
        assert self.client is not None
        backoff_s = 0.1
        while not self._stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self.channel)
                self.stale()  # revocations announced while unsubscribed were missed
                backoff_s = 0.1
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        self.stale()
            except redis.RedisError as exc:
                log.warning("token cache lost Redis (%s); revocations still reach this process within %.1fs",
                            exc, self.recheck_s)
                time.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
            finally:
                try:
                    pubsub.close()
                except redis.RedisError:
                    pass
