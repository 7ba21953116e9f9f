"""The tables, as SQLAlchemy 2.0 typed models. Alembic migrations are generated from these
and are the only thing that creates or changes the schema."""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from engine.statuses import FINAL_STATUSES, LIVE_STATUSES, InterruptStatus, NodeStatus, RunStatus

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _status_in(statuses: Iterable[StrEnum]) -> str:
    """`status IN ('a','b')`, in the enum's order: a CHECK's or an index predicate's text."""
    return "status IN (" + ",".join(f"'{s}'" for s in statuses) + ")"


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Space(Base):
    __tablename__ = "spaces"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _now()
    # Fair share: this space's cap on running nodes (NULL: RELAYFLOW_SPACE_MAX_RUNNING_NODES;
    # 0: none), and how many of its nodes run now, kept exact by a trigger on node_runs
    # (migration 0004) for every transition into or out of `running`.
    max_running_nodes: Mapped[int | None] = mapped_column(Integer)
    running_nodes: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Retention (migration 0014): days this space's ended runs are kept (NULL:
    # RELAYFLOW_RETENTION_DAYS; 0: forever); engine/retention.py deletes older ones.
    retention_days: Mapped[float | None] = mapped_column(Float)


class SpaceWaiter(Base):
    """A queued node its space's cap refused: it waits here, without a message, for a freed slot."""

    __tablename__ = "space_waiters"
    node_row_id: Mapped[int] = mapped_column(ForeignKey("node_runs.id", ondelete="CASCADE"), primary_key=True)
    # No foreign key to spaces: its check would share-lock the space's row on every refusal
    # (a MultiXact under concurrency); the row goes with its node (runs -> node_runs -> here).
    space_id: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    node_id: Mapped[str] = mapped_column(String(64))
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (Index("ix_space_waiters_line", "space_id", "queued_at", "node_row_id"),)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    space_id: Mapped[str] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # Who the token acts for (migration 0010): a person, so a prompt's creator is not a token.
    owner: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Workflow(Base):
    __tablename__ = "workflows"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    space_id: Mapped[str] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    latest_version: Mapped[int] = mapped_column(Integer)
    published_version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    __table_args__ = (Index("ix_workflows_space_created", "space_id", "created_at"),)


class WorkflowVersion(Base):
    __tablename__ = "workflow_versions"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    __table_args__ = (UniqueConstraint("workflow_id", "version", name="uq_workflow_versions_workflow_version"),)


class WorkflowNode(Base):
    """Per-version node facts the claim query needs, so a claim never reads the whole definition."""

    __tablename__ = "workflow_nodes"
    version_id: Mapped[int] = mapped_column(ForeignKey("workflow_versions.id", ondelete="CASCADE"), primary_key=True)
    # '' for the workflow's own nodes; the path of a composite node for the nodes of its inline
    # body (migration 0008)
    body: Mapped[str] = mapped_column(Text, primary_key=True, server_default=text("''"))
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    deps: Mapped[list[str]] = mapped_column(ARRAY(Text))
    needs_inputs: Mapped[bool] = mapped_column(Boolean)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    space_id: Mapped[str] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("workflow_versions.id"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    inputs: Mapped[dict[str, Any]] = mapped_column(JSONB)
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    remaining: Mapped[int] = mapped_column(Integer)
    # Composite nodes (batch, loop, sub-workflow) run their body as child runs of a parent node.
    parent_run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    parent_node_id: Mapped[str | None] = mapped_column(String(64))
    # The epoch of the parent node's attempt that started this child (a child of an older attempt
    # cannot decide a newer one), and how deep it is (0: submitted by a client). Migration 0007.
    parent_epoch: Mapped[int | None] = mapped_column(Integer)
    depth: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # A child run of a composite node with an inline body (batch, loop) runs that body of its
    # parent's version ('' : the whole workflow); `item_index` is its item or iteration (a
    # sub-workflow's child: 0). Migration 0008.
    body: Mapped[str] = mapped_column(Text, server_default=text("''"))
    item_index: Mapped[int | None] = mapped_column(Integer)
    input_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # USD spent by the run's LLM attempts, failed ones included, and by its child runs (migration 0013)
    cost: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # How the client started it: async (submit and poll), sync (waits for the end) or stream (SSE);
    # Coze Studio's `run_mode` in the run history.
    run_mode: Mapped[str] = mapped_column(String(16), server_default=text("'async'"))
    created_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = _now()
    # Rerun lineage (migration 0012): the run this one reran (no foreign key: retention may delete
    # the source), the node it reran from, and the overrides applied to that node's attempts.
    source_run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    rerun_from: Mapped[str | None] = mapped_column(Text)
    overrides: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    __table_args__ = (
        UniqueConstraint("space_id", "idempotency_key", name="uq_runs_space_idempotency"),
        # Migration 0012: a source's reruns, newest first (the run object's `reruns`, ?source=).
        Index("ix_runs_source", "source_run_id", "created_at", "id",
              postgresql_where=text("source_run_id IS NOT NULL")),
        Index("ix_runs_space_created", "space_id", "created_at", "id"),
        Index("ix_runs_workflow_created", "workflow_id", "created_at", "id"),
        Index("ix_runs_parent", "parent_run_id", "parent_node_id", "parent_epoch", "item_index",
              postgresql_where=text("parent_run_id IS NOT NULL")),
        Index("ix_runs_active", "deadline_at",
              postgresql_where=text(_status_in(s for s in RunStatus if s in LIVE_STATUSES))),
        # Migration 0009: live children by parent attempt (the reconciler's orphan sweep skips
        # through it one attempt at a time, whatever the number of items).
        Index("ix_runs_live_children", "parent_run_id", "parent_node_id", "parent_epoch",
              postgresql_where=text("parent_run_id IS NOT NULL AND "
                                    + _status_in(s for s in RunStatus if s in LIVE_STATUSES))),
        # Migration 0014: ended top-level runs per space by end time (the retention sweep's pick).
        Index("ix_runs_expired", "space_id", "finished_at",
              postgresql_where=text("parent_run_id IS NULL AND "
                                    + _status_in(s for s in RunStatus if s in FINAL_STATUSES))),
        # Migration 0006 (its list written out; tests/unit/test_statuses.py compares them).
        CheckConstraint(_status_in(RunStatus), name="status"),
    )


class NodeRun(Base):
    __tablename__ = "node_runs"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    node_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    in_degree: Mapped[int] = mapped_column(Integer)
    join_any: Mapped[bool] = mapped_column(Boolean)
    pending_in: Mapped[int] = mapped_column(Integer)
    active_in: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    crashes: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    port: Mapped[str | None] = mapped_column(String(64))
    # True once this node's outcome has been signalled to its successors. A skip decided by
    # one statement is signalled by the next; the reconciler finishes it if a worker died between.
    settled: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    output: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The outputs a resume supplied to an interrupted node (validated by the API); its next
    # claim returns them and the node finishes with them instead of asking again.
    resume: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    attempt_log: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    # A composite node's children of its current attempt: how many it started, how many ended
    # (O(1) per finished child). Migration 0007.
    children_total: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    children_done: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # How many were started (a batch runs at most `concurrency` at once; a child's end starts the
    # next), and whether the first child that does not succeed wakes the node at once. Migration 0008.
    children_started: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    children_fail_fast: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    # LLM nodes: the registry model that answered the deciding attempt, and its token usage.
    model: Mapped[str | None] = mapped_column(String(128))
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # USD spent by every attempt of the node (a composite: its child runs too); migration 0013
    cost: Mapped[Decimal] = mapped_column(Numeric, server_default=text("0"))
    # Nodes using a library prompt: {key, version, version_id}, pinned at the first attempt so
    # retries and resumes render the same text (migration 0010).
    prompt: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The worker (`workers.id`) whose claim started the current or last attempt (migration 0011);
    # no foreign key: a worker's row goes when it stops, its history stays.
    worker: Mapped[str | None] = mapped_column(Text)
    # Whether that claim counted the node in its space's `running_nodes` (its space had a cap);
    # the count's trigger counts only such nodes (migration 0016).
    counted: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Only (id) and (run_id, node_id) are indexed, and no index covers `status`: the two
    # updates a node gets per attempt can then be HOT (heap-only, no index writes; the
    # migration sets fillfactor 70 for room). The reconciler finds work through active runs.
    __table_args__ = (UniqueConstraint("run_id", "node_id", name="uq_node_runs_run_node"),
                      CheckConstraint(_status_in(NodeStatus), name="status"))


class Worker(Base):
    """A live (or lately dead) worker process: it refreshes `heartbeat_at` every
    RELAYFLOW_WORKER_HEARTBEAT_S and deletes its row when it stops cleanly (migration 0011)."""

    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(Text, primary_key=True)  # <hostname>:<pid>:<6 hex>
    host: Mapped[str] = mapped_column(Text)
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    started_at: Mapped[datetime] = _now()
    heartbeat_at: Mapped[datetime] = _now()


class RunInterrupt(Base):
    """A question or input form a node is waiting on; answered at most once (`status` guards it)."""

    __tablename__ = "run_interrupts"
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    node_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))  # question | input
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), server_default=text("'pending'"))  # InterruptStatus
    answer: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (Index("ix_run_interrupts_run", "run_id", "created_at"),
                      CheckConstraint(_status_in(InterruptStatus), name="status"))


class RunEvent(Base):
    """Append-only run history; `id` is the SSE event id (one sequence for every run, monotonic
    per run: every insert happens while the run's row is locked)."""

    __tablename__ = "run_events"
    # (run_id, id) is the primary key and the only index: every read is "this run's events after
    # id N", and a node writes two events, so one index instead of two halves their index work.
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    node_id: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()


class ModelGeneration(Base):
    """One state of the model registry: the model documents as written (`${VAR}` placeholders
    unresolved, so no key taken from the environment is stored). The newest row is current;
    every worker process compares its id with the one it built its router from."""

    __tablename__ = "model_generations"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    models: Mapped[dict[str, Any]] = mapped_column(JSONB)  # model id -> document
    problems: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = _now()


class Prompt(Base):
    """A prompt of a space's library (migration 0010); its versions are immutable, labels move.

    `search_text` is the key, name, description and latest text, lower-cased, for substring
    search; the migration adds a pg_trgm GIN index on it when the extension is available
    (engine/store/prompts.py says why trigrams)."""

    __tablename__ = "prompts"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    space_id: Mapped[str] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, server_default=text("''"))
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    creator: Mapped[str] = mapped_column(String(200))
    latest_version: Mapped[int] = mapped_column(Integer)
    search_text: Mapped[str] = mapped_column(Text, server_default=text("''"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (UniqueConstraint("space_id", "key", name="uq_prompts_space_key"),
                      Index("ix_prompts_space_id", "space_id", "id"))


class PromptVersion(Base):
    """One immutable version of a prompt: text or chat messages, variables, model config."""

    __tablename__ = "prompt_versions"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    text_: Mapped[str | None] = mapped_column("text", Text)  # `text` would shadow sqlalchemy.text here
    messages: Mapped[list[Any] | None] = mapped_column(JSONB)
    variables: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    model: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    message: Mapped[str] = mapped_column(Text, server_default=text("''"))
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _now()
    __table_args__ = (UniqueConstraint("prompt_id", "version", name="uq_prompt_versions_prompt_version"),
                      CheckConstraint("(text IS NULL) <> (messages IS NULL)", name="text_or_messages"))


class PromptLabel(Base):
    """A movable pointer to a version (`production`, `staging`, …); `latest` is not stored."""

    __tablename__ = "prompt_labels"
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), primary_key=True)
    label: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = _now()


class PromptEvent(Base):
    """The audit of every prompt change (create, version, label, delete, restore). Its newest id
    is also the library's change counter: a process's prompt cache is dropped when it moves."""

    __tablename__ = "prompt_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(200))
    token_id: Mapped[int | None] = mapped_column(BigInteger)
    version: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = _now()
    __table_args__ = (Index("ix_prompt_events_prompt", "prompt_id", "id"),)
