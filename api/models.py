"""Request and response models: they validate requests and generate the OpenAPI document."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.statuses import RunStatusName
from engine.tokens import DEFAULT_EXPIRY, MAX_EXPIRY, NAME_MAX_CHARS, SCOPES

# Versions and offsets are PostgreSQL integers: a larger number is refused, not a driver error.
PgInt = Annotated[int, Field(le=2**31 - 1)]


class Strict(BaseModel):
    """A request body: unknown keys refused, no lax coercion (`true` is not the version 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorItem(BaseModel):
    node_id: str | None = None
    field: str | None = None
    message: str


class ErrorBody(BaseModel):
    """Every error: a non-zero code and a sentence naming what is at fault."""

    code: int
    msg: str
    errors: list[ErrorItem] | None = None


class WorkflowCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    definition: dict[str, Any] | str = Field(description="The definition as an object, or as YAML/JSON text.")


class WorkflowUpdate(Strict):
    definition: dict[str, Any] | str
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)


class WorkflowPublish(Strict):
    version: PgInt | None = Field(default=None, ge=1)


class WorkflowPath(BaseModel):
    workflow_id: str = Field(max_length=64)


class WorkflowVersionOut(BaseModel):
    workflow_id: str
    version: int


class WorkflowPublished(BaseModel):
    workflow_id: str
    published_version: int


class WorkflowSummary(BaseModel):
    workflow_id: str
    name: str
    description: str | None
    latest_version: int
    published_version: int | None
    created_at: str
    updated_at: str


class WorkflowList(BaseModel):
    workflows: list[WorkflowSummary]


class VersionInfo(BaseModel):
    version: int
    created_at: str


class WorkflowOut(WorkflowSummary):
    versions: list[VersionInfo]
    definition: dict[str, Any]


class ListQuery(BaseModel):
    limit: int = Field(default=100, ge=1, le=500)
    offset: PgInt = Field(default=0, ge=0)


class RunCreate(Strict):
    inputs: dict[str, Any] = Field(default_factory=dict)
    version: PgInt | None = Field(default=None, ge=1)
    mode: Literal["async", "sync"] = Field(
        default="async", description="async: answer 202 at once; sync: wait up to wait_s for the run to end.")
    wait_s: float | None = Field(default=None, gt=0, le=300,
                                 description="sync mode: seconds to wait (default 30); 202 if the run has not ended.")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


class ResumeBody(Strict):
    event_id: str = Field(min_length=1, max_length=64, description="The `interrupt.event_id` being answered.")
    data: Any = Field(default=None, description="The answer: text (or {answer} / {option_index}) for a "
                                                "question, an object matching the form's schema for an input.")


class ResumeAccepted(BaseModel):
    run_id: str
    status: str
    event_id: str
    node_id: str


class EventsQuery(BaseModel):
    last_event_id: int | None = Field(default=None, ge=0, description="Replay events after this id "
                                      "(the Last-Event-ID header does the same).")


class RunAccepted(BaseModel):
    run_id: str
    status: str


class RunPath(BaseModel):
    run_id: str = Field(max_length=64)


class RunListQuery(BaseModel):
    workflow_id: str | None = Field(default=None, max_length=64)
    status: RunStatusName | None = None
    cursor: str | None = Field(default=None, max_length=512)
    limit: int = Field(default=20, ge=1, le=200)
    # The child runs of this run (composite nodes: sub-workflow, batch, loop). Without it, only the
    # runs clients submitted are listed (a batch's items would drown them).
    parent: str | None = Field(default=None, max_length=64, description=(
        "List the child runs of this run (a sub-workflow's run, a batch's items), each with parent_node_id "
        "and item_index; 404 if it is no run of the space. Without it, only top-level (submitted) runs are "
        "listed, never child runs."))
    source: str | None = Field(default=None, max_length=64, description=(
        "List the reruns of this run (POST /v1/runs/{run_id}/rerun), newest first; `workflow_id` is ignored."))


class Progress(BaseModel):
    """A composite node's child runs: how many ended, how many there are, how many were started."""

    done: int = Field(description="Child runs that ended (succeeded, failed or cancelled).")
    total: int = Field(description="Child runs of the node's attempt: a batch's items; 1 for a sub-workflow; "
                                   "0 before the attempt starts them.")
    started: int = Field(description="Child runs started so far (a batch starts at most `concurrency` at once; "
                                     "started - done run now).")


class NodeOut(BaseModel):
    node_id: str
    type: str
    title: str | None = None
    status: str
    attempts: int
    started_at: str | None
    finished_at: str | None
    error: dict[str, Any] | None
    output: dict[str, Any] | None = None
    attempt_errors: list[Any] = []
    model: str | None = None
    usage: dict[str, int | float] | None = Field(default=None, description=(
        "tokens of the attempt that decided the node, and `cost`: USD of all its attempts (and child runs)"))
    prompt: dict[str, Any] | None = Field(default=None, description="the library prompt {key, version} the node "
                                                                   "pinned at its first attempt")
    worker: str | None = Field(default=None, description="A running node: the worker process holding it "
                                                        "(`<hostname>:<pid>:<id>`); null otherwise.")
    # Composite nodes (workflow, batch, loop): how many child runs ended, how many there are, and
    # how many were started; the children are listed by GET /v1/runs?parent=<run_id>.
    progress: Progress | None = Field(default=None, description=(
        "Composite nodes only (workflow, batch): progress of its child runs, which GET /v1/runs?parent=<run_id> "
        "lists; the run's event stream has a node.progress event per ended child."))
    reused: bool | None = Field(default=None, description=(
        "A rerun only: true when the node's outcome was copied from the source run (it did not run again)."))


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    cost: float = Field(default=0.0, description="USD spent by the run's LLM attempts (failed ones included) and "
                                                 "its child runs: token usage times the models' declared prices")


class RunOut(BaseModel):
    run_id: str
    workflow_id: str
    version: int
    status: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    error: dict[str, Any] | None
    usage: Usage
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    updated_at: str | None = None
    run_mode: Literal["async", "sync", "stream"] | None = None
    nodes: list[NodeOut]
    interrupt: dict[str, Any] | None
    # A child run (of a composite node): the run and node that started it, and which item or
    # iteration of that node it is (a sub-workflow's child: 0).
    parent_run_id: str | None = None
    parent_node_id: str | None = None
    item_index: int | None = Field(default=None, description=(
        "A child run: which item of its batch node it runs (from 0), or 0 for a sub-workflow's child; "
        "null for a submitted run."))
    # Rerun lineage (docs/operations.md "Rerunning runs")
    source_run_id: str | None = Field(default=None, description="A rerun: the run it reran (that run may "
                                                                "have been deleted since).")
    rerun_from: str | None = Field(default=None, description="A rerun: the node it reran from.")
    reruns: list[str] = Field(default_factory=list, description="The newest reruns of this run (at most 20; "
                                                                "GET /v1/runs?source=<run_id> lists them all).")


class RunSummary(BaseModel):
    run_id: str
    workflow_id: str
    version: int
    status: str
    error: dict[str, Any] | None
    usage: Usage
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    parent_run_id: str | None = None
    parent_node_id: str | None = None
    item_index: int | None = None
    source_run_id: str | None = None
    rerun_from: str | None = None


class RunList(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    postgres: str | None = Field(default=None, description="operator token only")
    redis: str | None = Field(default=None, description="operator token only")
    queue_depth: int | None = None
    delayed: int | None = None
    nodes: dict[str, int] | None = None


class TokenCreate(Strict):
    name: str = Field(min_length=1, max_length=NAME_MAX_CHARS)
    user: str | None = Field(default=None, min_length=1, max_length=NAME_MAX_CHARS,
                             description="the person the token acts for (a prompt's creator); default: its name")
    scopes: list[str] = Field(min_length=1, max_length=len(SCOPES) * 2,
                              description="Any of run, manage, admin (admin implies the others); "
                                          "operator cannot be granted through the API (403).")
    expires_in_s: int | None = Field(default=int(DEFAULT_EXPIRY.total_seconds()), ge=1,
                                     le=int(MAX_EXPIRY.total_seconds()),
                                     description="Lifetime in seconds (default 90 days); null: never expires.")


class TokenPath(BaseModel):
    token_id: int = Field(ge=1, le=2**63 - 1)


class TokenCreated(BaseModel):
    """The new token; `token` is its plaintext, shown only in this answer."""

    token_id: int
    token: str
    name: str
    owner: str
    space_id: str
    scopes: list[str]
    expires_at: str | None


class TokenOut(BaseModel):
    token_id: int
    name: str
    owner: str
    space_id: str
    scopes: list[str]
    created_at: str
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None


class TokenList(BaseModel):
    tokens: list[TokenOut]


class TokenRevoked(BaseModel):
    token_id: int
    revoked_at: str


class ModelConn(BaseModel):
    base_url: str | None
    model: str
    timeout: float | None
    api_key_set: bool = Field(description="whether the model has a key (never the key nor a part of it)")
    api_key_env: str | None = Field(description="the environment variable the key comes from, if any")
    header_names: list[str] = Field(description="the names of its custom headers (never their values)")


class ModelInfo(BaseModel):
    id: str
    name: str
    icon_uri: str | None
    description: dict[str, Any] | None
    protocol: str
    status: int
    capability: dict[str, Any]
    default_parameters: dict[str, Any]
    conn_config: ModelConn | None = Field(default=None, description="operator token only")
    source: str | None = Field(default=None, description="operator token only")


class SourceProblem(BaseModel):
    source: str = Field(description="the file path (or env MODEL_*_<n>) at fault")
    field: str | None
    message: str


class ModelList(BaseModel):
    models: list[ModelInfo]
    generation: int | None
    refresh_time: str | None
    problems: list[SourceProblem]


class RefreshData(BaseModel):
    model_count: int
    new_models: list[str]
    updated_models: list[str]
    removed_models: list[str]
    refresh_time: str
    generation: int
    problems: list[SourceProblem]


class RefreshOut(BaseModel):
    code: Literal[0]
    msg: str
    data: RefreshData
