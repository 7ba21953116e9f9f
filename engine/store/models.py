"""SQL of the model registry: its generations (the newest row is current)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from engine.store.sql import registry as sql


@dataclass(frozen=True)
class Generation:
    """One stored state of the registry."""

    id: int
    models: dict[str, dict[str, Any]]
    problems: list[dict[str, Any]]
    created_at: datetime


class ModelStore:
    """Registry generations, over autocommit connections (each statement is atomic)."""

    def __init__(self, engine: Engine) -> None:
        self.auto = engine.execution_options(isolation_level="AUTOCOMMIT")

    def current_id(self) -> int | None:
        """The current generation's id (an index-only lookup), None before the first one."""
        with self.auto.connect() as conn:
            return conn.execute(sql.CURRENT_GENERATION_ID.clause).scalar()

    def current(self) -> Generation | None:
        """The current generation, None before the first one."""
        with self.auto.connect() as conn:
            row = conn.execute(sql.CURRENT_GENERATION.clause).first()
        return Generation(row.id, row.models, row.problems, row.created_at) if row else None

    def insert(self, models: dict[str, dict[str, Any]], problems: list[dict[str, Any]],
               only_if_none: bool = False) -> Generation | None:
        """Store a new current generation; with `only_if_none`, only when there is none yet
        (the first worker to need models stores the files it read; concurrent ones store nothing)."""
        statement = sql.INSERT_FIRST_GENERATION if only_if_none else sql.INSERT_GENERATION
        with self.auto.connect() as conn:
            if only_if_none:
                # serialises concurrent first loads so that at most one stores its reading
                conn.execute(sql.FIRST_GENERATION_LOCK.clause)
            try:
                row = conn.execute(statement.clause,
                                   {"models": json.dumps(models), "problems": json.dumps(problems)}).first()
            finally:
                if only_if_none:
                    conn.execute(sql.FIRST_GENERATION_UNLOCK.clause)
        return Generation(row.id, row.models, row.problems, row.created_at) if row else None
