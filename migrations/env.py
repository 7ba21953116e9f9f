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


def run_migrations_online() -> None:
    connectable = create_engine(DATABASE_URL)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    connectable.dispose()


run_migrations_online()
