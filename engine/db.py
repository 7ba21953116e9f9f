"""Database plumbing: the SQLAlchemy engine (created lazily, after fork) and migrations."""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext

from engine import oplog
from engine.errors import ServiceUnavailable
from engine.settings import Settings, package_data

if TYPE_CHECKING:
    from alembic.config import Config

_engines: dict[tuple[int, str, bool], Engine] = {}
_lock = threading.Lock()


def get_engine(settings: Settings, *, pre_ping: bool = True) -> Engine:
    """One pooled engine per process, URL and ping mode; a forked child gets its own.

    Workers pass `pre_ping=False`: a ping is a round trip per checkout, as much as the work of
    a node; the lifecycle store retries a statement once on a dropped connection instead.
    """
    url = settings.database_url
    if not url:
        raise ServiceUnavailable("DATABASE_URL is not set; run `relayflow up` for embedded servers.")
    key = (os.getpid(), url, pre_ping)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = create_engine(url, pool_pre_ping=pre_ping, pool_size=settings.db_pool_size,
                                   max_overflow=settings.db_max_overflow, pool_recycle=1800)
            event.listen(engine, "handle_error", _log_lost_connection)
            _engines[key] = engine
    return engine


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


def migrate(database_url: str) -> None:
    """Bring the schema to the newest migration (`alembic upgrade head`)."""
    from alembic import command

    command.upgrade(alembic_config(_normalise(database_url)), "head")


def _normalise(url: str) -> str:
    return Settings(database_url=url).database_url or url
