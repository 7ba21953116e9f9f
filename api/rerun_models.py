"""Request and response models of the rerun routes (POST /v1/runs/{id}/rerun, POST /v1/workflows/{id}/reruns)."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.models import PgInt, Strict


class RerunOverrides(Strict):
    """What changes for `from_node`'s attempts (and only theirs)."""

    inputs: dict[str, Any] | None = Field(default=None, description=(
        "Replace these rendered inputs of from_node (names of its declared `inputs`)."))
    model: str | None = Field(default=None, min_length=1, max_length=128, description=(
        "An LLM (or intent) node: answer with this registry model instead (GET /v1/models)."))
    prompt_version: PgInt | None = Field(default=None, ge=1, description=(
        "An LLM node with a library prompt: use this version of its prompt key instead of its label/version."))


class RerunBody(Strict):
    from_node: str = Field(min_length=1, max_length=64, description=(
        "Run this node and everything downstream of it again; every other node reuses the source's outcome."))
    inputs: dict[str, Any] | None = Field(default=None, description=(
        "Replace the run's inputs (validated like a submit). Reused nodes keep the outputs they computed "
        "from the source's inputs: nothing upstream of from_node is recomputed."))
    overrides: RerunOverrides | None = None


class RerunAccepted(BaseModel):
    run_id: str
    status: str
    source_run_id: str
    rerun_from: str | None = None
    reused: list[str] = Field(default_factory=list, description="nodes whose outcome was copied from the source")
    rerun: list[str] = Field(default_factory=list, description="nodes that run again")


class BulkRerunBody(Strict):
    model_config = Strict.model_config | {"strict": False}  # ISO times arrive as JSON strings
    status: Literal["failed", "cancelled"] = "failed"
    since: datetime = Field(description="ISO time: runs created at or after it")
    until: datetime = Field(description="ISO time: runs created before it")
    from_: str = Field(default="failed_node", alias="from", min_length=1, max_length=64, description=(
        "`failed_node`: each run reruns from the node that failed it (a cancelled run: its first unfinished "
        "node); or a node id for every run."))
    limit: int = Field(default=100, ge=1, le=1000)
    dry_run: bool = False
    again: bool = Field(default=False, description=(
        "Rerun sources a bulk call of the same range already reran (skipped otherwise)."))


class BulkRefusal(BaseModel):
    source_run_id: str
    reason: str


class BulkRerunStarted(BaseModel):
    source_run_id: str
    run_id: str
    from_node: str


class BulkRerunOut(BaseModel):
    count: int = Field(description="runs rerun (a dry run: runs that would be)")
    runs: list[BulkRerunStarted] | list[str] = Field(description=(
        "the reruns started; a dry run: the first few source run ids"))
    skipped: int = Field(description="sources left out: no node to rerun, or a refusal (see `refusals`)")
    refusals: list[BulkRefusal] = Field(default_factory=list, description="the first few refusals")
