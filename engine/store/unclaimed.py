"""Storage of the unclaimed path: a pure node read without a claim, then committed if untouched
(engine/store/sql/unclaimed.py says why that keeps the claim's guarantees)."""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.rows import namedtuple_row
from sqlalchemy import Engine

from engine.store.lifecycle import Claim, Decision, Signal, decision_of, dumps, signal_params
from engine.store.raw import execute_one
from engine.store.sql import Statement
from engine.store.sql import unclaimed as sql


@dataclass(frozen=True)
class Peeked:
    """A node read for the unclaimed path: what its first attempt sees, and whether its space is
    capped (then its execution has a budget, past which it is claimed)."""

    claim: Claim
    capped: bool


@dataclass(frozen=True)
class Committed:
    """What an unclaimed node's commit did: the decision, and whether it started its run."""

    decision: Decision
    run_started: bool


class UnclaimedStore:
    """The read and the commit of a pure node that was not claimed; one statement each."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _one(self, statement: Statement, params: dict[str, Any]) -> Any:
        return execute_one(self.engine, statement.pyformat, params, namedtuple_row, "statement")

    def peek(self, run_id: uuid.UUID, node_id: str, space_cap: int, budgeted: bool) -> Peeked | None:
        """The node as its first attempt would see it, if it is queued, never attempted, not
        waitlisted, and its space has no cap, or (`budgeted`) has room under it; None otherwise
        (the caller claims it the usual way)."""
        row = self._one(sql.PEEK_UNCLAIMED, {"run": run_id, "node": node_id, "cap": space_cap, "budgeted": budgeted})
        if row is None:
            return None
        return Peeked(Claim(node_row_id=row.id, epoch=row.epoch, attempt=1, version_id=row.version_id,
                            deadline_at=row.deadline_at, run_inputs=row.inputs, dep_outputs=row.deps or {},
                            space_id=row.space_id, body=row.body or "", overrides=row.overrides,
                            claimed_at=row.read_at), bool(row.capped))

    def commit(self, run_id: uuid.UUID, node_id: str, claim: Claim, *, output: dict[str, Any], port: str | None,
               signals: Sequence[Signal], event_data: dict[str, Any], worker: str | None) -> Committed:
        """Store the node as succeeded if nobody touched it since `peek`, signal its successors,
        count it and record its events (`node.started`, `node.succeeded`, `run.started` if first)."""
        row = self._one(sql.COMMIT_UNCLAIMED, {
            "run": run_id, "node": node_id, "nid": claim.node_row_id, "output": dumps(output), "port": port,
            "started_at": claim.claimed_at, "worker": worker, "event_data": dumps(event_data),
            **signal_params(signals)})
        decision = decision_of(row)
        return Committed(decision, bool(decision.committed and row.run_started))
