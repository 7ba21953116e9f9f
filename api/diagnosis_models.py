"""Response models of `GET /v1/runs/{run_id}/diagnosis` (engine/diagnosis.py decides the answer)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

WaitingFor = Literal["predecessors", "worker", "retry", "lease", "answer", "children", "space_cap", "deadline"]


class PendingPredecessor(BaseModel):
    node_id: str
    status: str


class LiveChild(BaseModel):
    run_id: str
    status: str
    item_index: int | None
    started_at: str | None


class ChildrenState(BaseModel):
    """A composite node's child runs: ended, in all, started, and the first live ones."""

    done: int
    total: int
    started: int
    live: list[LiveChild] = Field(description="The first few live child runs (bounded), lowest item first.")


class SpaceCap(BaseModel):
    space_id: str
    max_running_nodes: int
    running_nodes: int


class DiagnosisNode(BaseModel):
    """What one node that is not final waits for; the fields beside `detail` depend on `waiting_for`."""

    node_id: str
    status: str
    waiting_for: WaitingFor = Field(description=(
        "predecessors: upstream nodes not decided; worker: queued with no worker taking it; retry: a retry not "
        "due yet; lease: running, held by a worker's lease; answer: a person's answer; children: its child runs; "
        "space_cap: waitlisted at its space's cap; deadline: the run's deadline passed."))
    since: str | None = Field(description="ISO time since when it waits for that.")
    detail: str = Field(description="The same in one plain sentence.")
    predecessors: list[PendingPredecessor] | None = None
    queue: str | None = None
    live_workers: int | None = Field(default=None, description="worker: live workers consuming its queue.")
    retry_at: str | None = None
    attempt: int | None = Field(default=None, description="retry: the next attempt; lease: the running one.")
    max_attempts: int | None = None
    error: dict[str, Any] | None = Field(default=None, description="retry: the error of the last attempt.")
    worker: str | None = Field(default=None, description="lease: the worker id holding it (`workers.id`).")
    worker_alive: bool | None = None
    worker_heartbeat_at: str | None = None
    lease_expires_at: str | None = None
    reconciler_action: str | None = Field(default=None, description=(
        "lease, when the worker looks dead or the lease expired: what the reconciler will do."))
    event_id: str | None = Field(default=None, description="answer: the interrupt to answer (POST .../resume).")
    interrupt_type: Literal["question", "input"] | None = None
    children: ChildrenState | None = None
    space: SpaceCap | None = None


class DiagnosisOut(BaseModel):
    """Why a run is not moving: one entry per node that is not final (none once the run ended)."""

    run_id: str
    status: str
    summary: str
    checked_at: str | None = Field(default=None, description="The database's time of the diagnosis.")
    deadline_at: str | None = None
    queue: str = Field(description="The queue the run's nodes are sent to.")
    live_workers: int = Field(description="Workers whose heartbeat is fresh (any queue).")
    queue_workers: int = Field(description="Live workers consuming `queue`.")
    nodes: list[DiagnosisNode]
