"""Alembic environment: the schema comes from engine.schema; the URL from the config or DATABASE_URL."""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from engine.schema import Base
from engine.settings import Settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings().database_url
if not url:
    raise SystemExit("DATABASE_URL is not set")
DATABASE_URL: str = Settings(database_url=url).database_url or url


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Leave out of autogenerate the indexes a migration makes only where an extension exists
    (pg_trgm's `*_trgm` indexes, migration 0010)."""
    return not (type_ == "index" and name is not None and name.endswith("_trgm"))


def run_migrations_online() -> None:
    connectable = create_engine(DATABASE_URL)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True,
                          include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()
    connectable.dispose()


run_migrations_online()
