"""Alembic owns the schema: migrations apply to an empty database and match the models."""
from __future__ import annotations

import pytest
from alembic import command

from engine.db import alembic_config

pytestmark = pytest.mark.integration


def test_migrations_match_the_models(database_url: str) -> None:
    # `alembic check` raises if autogenerate would produce any operation (schema drift).
    command.check(alembic_config(database_url))


def test_migrations_downgrade_and_upgrade_cleanly(database_url: str) -> None:
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "head")
    command.check(cfg)
