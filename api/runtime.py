"""Per-process wiring of the API: settings, store, dispatcher, service (created lazily, after fork)."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import redis
from flask import current_app, g, request

from engine.auth_limit import FailedAuthLimiter
from engine.db import get_engine
from engine.dispatch import DramatiqDispatcher, make_broker
from engine.errors import Unauthorized
from engine.follow import RunFollower
from engine.notify import RedisNotifier, RunWatcher
from engine.service import Relayflow
from engine.settings import Settings
from engine.store import Store
from engine.streams import StreamRegistry
from engine.token_cache import TokenCache
from engine.tokens import Principal


@dataclass
class Runtime:
    """What one API process holds."""

    settings: Settings
    store: Store
    service: Relayflow
    redis: redis.Redis
    follower: RunFollower
    limiter: FailedAuthLimiter
    streams: StreamRegistry
    tokens: TokenCache


_lock = threading.Lock()


def runtime() -> Runtime:
    """This process's runtime, built on first use."""
    holder: dict[int, Runtime] = current_app.extensions.setdefault("relayflow", {})
    found = holder.get(os.getpid())
    if found is None:
        with _lock:
            found = holder.get(os.getpid())
            if found is None:
                settings: Settings = current_app.config["RELAYFLOW_SETTINGS"]
                store = Store.from_engine(get_engine(settings, pre_ping="socket"))  # no ping round trip
                broker = make_broker(settings)
                notifier = RedisNotifier(broker.client, settings.queue_name)
                service = Relayflow(store, DramatiqDispatcher(broker, settings.queue_name), settings, notifier)
                # one subscriber per process, shared by every open stream and sync wait
                follower = RunFollower(store, RunWatcher(broker.client, settings.queue_name))
                limiter = FailedAuthLimiter(broker.client, settings.auth_failure_limit, settings.auth_failure_window_s)
                streams = StreamRegistry(store, broker.client, settings.queue_name,
                                         limit=settings.max_streams_per_token,
                                         recheck_s=settings.stream_recheck_s, slot_ttl_s=settings.stream_slot_ttl_s)
                tokens = TokenCache(store.catalog, broker.client, settings.queue_name, settings.token_cache_s,
                                    settings.token_recheck_s)
                found = Runtime(settings, store, service, broker.client, follower, limiter, streams, tokens)
                holder[os.getpid()] = found
    return found


def principal(scope: str | None = None) -> Principal:
    """The caller, authenticated from the bearer token (cached on the request).

    An address with too many failed attempts gets 429 before its token is looked up; a failure
    is counted (engine/auth_limit.py), a success costs no Redis round trip, and a token this process
    verified lately no database round trip (engine/token_cache.py).
    """
    found: Principal | None = g.get("principal")
    if found is None:
        rt = runtime()
        address = request.remote_addr or "unknown"
        rt.limiter.check(address)
        try:
            found = rt.tokens.principal(request.headers.get("Authorization"))
        except Unauthorized:
            rt.limiter.failed(address)  # 429 once over the limit, else the 401 below
            raise
        g.principal = found
    if scope:
        found.require(scope)
    return found
