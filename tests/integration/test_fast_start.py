"""`relayflow up` at head skips Alembic: the migration files' head is read without it, and compared
with the database's revision (engine/db.py `migrate(unless_current=True)`)."""
from __future__ import annotations

import pytest

from engine.db import alembic_config, head_revision, migrate
from engine.settings import Settings

pytestmark = pytest.mark.integration


def test_the_head_read_from_the_files_is_alembics(settings: Settings) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(settings.database_url or ""))
    assert head_revision() == script.get_current_head()


def test_a_database_at_head_is_not_migrated_again_and_an_older_one_is(settings: Settings) -> None:
    from alembic import command

    url = settings.database_url or ""
    # Given a database at head: nothing runs
    assert migrate(url, unless_current=True) is False
    # Given one a migration behind: it is brought to head
    command.downgrade(alembic_config(url), "-1")
    assert migrate(url, unless_current=True) is True
    assert migrate(url, unless_current=True) is False
