"""Storage of retention: delete expired run trees batch by batch, count them, and each space's setting.

Each batch is one short transaction: the sweep's advisory lock (so two processes never sweep at
once and a process that loses it stops), then one statement that deletes the batch whole.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from sqlalchemy import Engine

from engine.store.sql import retention as sql

RETENTION_LOCK_KEY = 0x52_46_52_54  # "RFRT": not the reconciler's key, so neither waits for the other


@dataclass(frozen=True)
class Deleted:
    """Rows one batch deleted (`picked`: expired top-level runs it looked at, deleted or not)."""

    picked: int = 0
    roots: int = 0
    runs: int = 0
    nodes: int = 0
    events: int = 0
    interrupts: int = 0
    waiters: int = 0

    def __add__(self, other: Deleted) -> Deleted:
        return Deleted(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass(frozen=True)
class Expired:
    """What a full sweep would delete now (at most: a tree with a live run is kept)."""

    roots: int
    runs: int
    nodes: int
    events: int
    interrupts: int


class RetentionStore:
    """Retention's queries over one pooled engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def delete_batch(self, default_days: float, batch: int) -> Deleted | None:
        """Delete up to `batch` expired top-level runs with their trees; None if another process sweeps."""
        with self.engine.begin() as conn:
            if not conn.execute(sql.TRY_LEAD.clause, {"k": RETENTION_LOCK_KEY}).scalar_one():
                return None
            row = conn.execute(sql.DELETE_EXPIRED_BATCH.clause,
                               {"default_days": default_days, "batch": batch}).one()
        return Deleted(*(int(value) for value in row))

    def expired(self, default_days: float) -> Expired:
        """Count what a full sweep would delete now (reads only)."""
        with self.engine.connect() as conn:
            row = conn.execute(sql.COUNT_EXPIRED.clause, {"default_days": default_days}).one()
        return Expired(*(int(value) for value in row))

    def space_retentions(self) -> dict[str, float | None]:
        """Every space's own retention in days (None: the deployment's default)."""
        with self.engine.connect() as conn:
            return {row.id: row.retention_days for row in conn.execute(sql.SPACE_RETENTIONS.clause)}

    def set_space_retention(self, space_id: str, days: float | None) -> bool:
        """Set a space's retention (None: the default; 0: forever); False if there is no such space."""
        with self.engine.begin() as conn:
            return conn.execute(sql.SET_SPACE_RETENTION.clause, {"id": space_id, "days": days}).rowcount > 0
