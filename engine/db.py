"""Database plumbing: the SQLAlchemy engine (created lazily, after fork) and migrations."""
from __future__ import annotations

import json
import os
import re
import select
import threading
from typing import TYPE_CHECKING, Any, Literal

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DisconnectionError

from engine import oplog
from engine.errors import ServiceUnavailable
from engine.settings import Settings, package_data

if TYPE_CHECKING:
    from alembic.config import Config

_engines: dict[tuple[int, str, bool | str], Engine] = {}
# A run of 19 digits may be an integer past 64 bits, which orjson would read as a float
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_lock = threading.Lock()


def get_engine(settings: Settings, *, pre_ping: bool | Literal["socket"] = True) -> Engine:
    """One pooled engine per process, URL and ping mode; a forked child gets its own.

    Workers pass `pre_ping=False`: a ping is a round trip per checkout, as much as the work of
    a node; the lifecycle store retries a statement once on a dropped connection instead.
    The web passes `"socket"`: a checkout looks at the connection's socket instead of sending a
    ping (no round trip; `_idle_socket_alive`), so a poll costs one round trip, not two. Its pool
    also keeps every connection it opens (`db_pool_size + db_max_overflow`, the same most): a gevent
    web process often has more requests in flight than `db_pool_size`, and an overflow connection
    is closed at its return, so under load most polls paid a connection's start and end (a server
    process forked and torn down) on top of their statement.
    """
    url = settings.database_url
    if not url:
        raise ServiceUnavailable("DATABASE_URL is not set; run `relayflow up` for embedded servers.")
    key = (os.getpid(), url, pre_ping)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            keep_all = pre_ping == "socket"
            engine = create_engine(url, pool_pre_ping=pre_ping is True,
                                   pool_size=settings.db_pool_size + (settings.db_max_overflow if keep_all else 0),
                                   max_overflow=0 if keep_all else settings.db_max_overflow, pool_recycle=1800,
                                   json_deserializer=read_json)
            event.listen(engine, "handle_error", _log_lost_connection)
            if pre_ping == "socket":
                event.listen(engine, "checkout", _idle_socket_alive)
            _engines[key] = engine
    return engine


def read_json(data: bytes | bytearray | memoryview | str) -> Any:
    """Every json and jsonb value read (psycopg's loader, set on every connection of our engines):
    orjson reads it several times faster than `json.loads`, which a poll's node rows and a node's
    inputs felt. What orjson would read differently falls back to `json.loads`: an integer past 64
    bits (a float to orjson; jsonb keeps it exact) and a number past a double's range (an error).
    A string of 19 digits sends it there too: slower, never wrong."""
    raw = bytes(data) if isinstance(data, memoryview) else data
    if _LONG_DIGITS.search(raw.encode() if isinstance(raw, str) else raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


def _idle_socket_alive(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Refuse (the pool then opens a new connection) a pooled connection the server has closed.

    An idle connection has nothing to read: the server writes only in answer to a query (we
    LISTEN on none of these). A readable socket means it closed the connection (a restart, an
    idle timeout, a terminated backend: its last words and the EOF are waiting), so the check
    costs a `select` with no timeout instead of a ping's round trip. What it cannot see (a peer
    gone without a FIN) fails the statement, as a ping's timeout would have failed the request.
    """
    if dbapi_connection.closed or getattr(dbapi_connection, "broken", False):
        raise DisconnectionError("the pooled connection is closed")
    try:
        readable, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
    except (OSError, ValueError) as exc:
        raise DisconnectionError(f"the pooled connection's socket is unusable: {exc}") from exc
    if readable:
        raise DisconnectionError("the server closed the pooled connection")


def _log_lost_connection(context: ExceptionContext) -> None:
    # SQLAlchemy tells a dropped connection from a failed statement; the pool discards it
    if context.is_disconnect and not context.is_pre_ping:
        oplog.connection_lost("postgres", context.original_exception, "the pool opens a new connection")


def alembic_config(database_url: str) -> Config:  # Alembic is imported lazily: CLI start-up cost
    """An Alembic config pointing at our migrations, whatever the working directory."""
    from alembic.config import Config

    migrations = package_data("migrations")
    cfg = Config(str(migrations / "alembic.ini"))
    cfg.set_main_option("script_location", str(migrations))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def migrate(database_url: str, *, unless_current: bool = False) -> bool:
    """Bring the schema to the newest migration (`alembic upgrade head`); whether it ran.

    `unless_current`: first compare the database's revision with the migration files' head, read
    without Alembic (`head_revision`), and skip Alembic (1-2 s of `relayflow up`) when they match.
    """
    if unless_current and _at_head(database_url):
        return False
    from alembic import command

    command.upgrade(alembic_config(_normalise(database_url)), "head")
    return True


_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(.+?)\s*$", re.MULTILINE)
_PLAIN_ID = re.compile(r"""^(['"])(\w+)\1$""")


def head_revision() -> str | None:
    """The single head of the migration files, from their `revision = '…'` and `down_revision = '…'`
    lines; None when it cannot be told that simply (a merge, a computed value): then ask Alembic."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (package_data("migrations") / "versions").glob("*.py"):
        found = dict(_REVISION_LINE.findall(path.read_text()))
        if "revision" not in found or "down_revision" not in found:
            return None
        ids = {key: _PLAIN_ID.match(value) for key, value in found.items()}
        if ids["revision"] is None or (ids["down_revision"] is None and found["down_revision"] != "None"):
            return None
        revisions.add(ids["revision"].group(2))
        if ids["down_revision"] is not None:
            parents.add(ids["down_revision"].group(2))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _at_head(database_url: str) -> bool:
    from engine.store.catalog import CatalogStore

    head = head_revision()
    if head is None:
        return False
    try:
        return CatalogStore(get_engine(Settings(database_url=database_url))).schema_revisions() == {head}
    except Exception:  # noqa: BLE001 - no table yet, or anything odd: Alembic decides
        return False


def _normalise(url: str) -> str:
    return Settings(database_url=url).database_url or url
