"""The contract every node type implements: a pydantic config model and one `run` method.

No I/O here. A node type is instantiated once per attempt with its validated config and is
given the node's rendered `inputs`; it returns its outputs as a JSON-serialisable dict.

Services a node may use come from its `NodeContext`, filled by the executor (as procrastinate
hands a job its `JobContext.app`): a node type never looks one up process-wide. Composite nodes
start child runs through `ctx.children` (a narrow port), then raise `WaitForChildren`.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from engine.compiler import CompiledWorkflow
    from engine.models.registry import Registry
    from engine.settings import Settings


class NodeConfig(BaseModel):
    """Base of every node type's config: unknown keys are refused at definition time."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ConfigT = TypeVar("ConfigT", bound=NodeConfig)


class ModelSource(Protocol):
    """The model registry as a node sees it (engine/models/calling.py `Hub` is the real one)."""

    def current(self) -> tuple[Registry, Any]:
        """(registry, LiteLLM router) of the current registry generation."""
        ...


class PromptSource(Protocol):
    """The prompt library as a node sees it (engine/prompt_cache.py `BoundPrompts` is the real one)."""

    def resolve(self, key: str, version: int | None, label: str | None) -> Any:
        """The `ResolvedPrompt` this node uses (pinned at its first attempt); PermanentNodeError if none."""
        ...


# The input of a body's child runs holding the outputs of the enclosing nodes the body references
# (not an identifier, so no author's input can take the name).
OUTER_KEY = "@outer"


class ChildRuns(Protocol):
    """The port a composite node starts its child runs through (engine/children.py is the real one)."""

    def start(self, workflow: str, version: int | None, inputs: dict[str, Any]) -> str:
        """Insert a child run of this attempt (not sent yet) of a workflow of the same space; its id.

        `workflow` is an id or a name; without `version`, the version this node's first child
        ran, else the published version, else the latest. NodeError if it cannot start.
        """
        ...

    # The epoch of this attempt's claim (a loop records its first to find its iterations).
    epoch: int

    def start_items(self, items: list[Any], shared: dict[str, Any], concurrency: int, fail_fast: bool,
                    first_index: int = 0) -> int:
        """Insert one child run of this node's inline body per item (not started yet; its inputs are
        `shared` plus `item` and `index`, counted from `first_index`); at most `concurrency` run at
        once once the node waits, each child's end starting the next. With `fail_fast` the first
        child that does not succeed wakes the node at once. Returns how many were inserted."""
        ...

    def keep(self, state: dict[str, Any]) -> None:
        """Keep `state` with the node while it waits; its wake's `ctx.resume` holds it beside the outcome."""
        ...

    def node_outputs(self, child_run_id: str, node_ids: list[str]) -> dict[str, Any]:
        """The outputs of some nodes of one child run (None: skipped, or none)."""
        ...

    def iterations(self, first_epoch: int, marks: list[str]) -> list[ChildOutcome]:
        """A loop attempt's iterations (children from `first_epoch` on), in order; `marked` when
        one of the nodes `marks` succeeded in it."""
        ...

    def outcomes(self, child_run_id: str) -> list[ChildOutcome]:
        """Every child of the attempt that started `child_run_id`, in item order."""
        ...

    def cancel_rest(self, child_run_id: str) -> int:
        """Cancel the live children of the attempt that started `child_run_id`; how many."""
        ...


@dataclass(frozen=True)
class ChildOutcome:
    """How one child run of a composite node ended (or that it has not)."""

    index: int
    run_id: str
    status: str
    outputs: dict[str, Any] | None
    error: dict[str, Any] | None
    marked: bool = False  # a loop iteration in which a `continue` node ran


@dataclass(frozen=True)
class NodeContext:
    """What a running node may know about its attempt, and the template renderer of its run."""

    run_id: str
    node_id: str
    attempt: int
    timeout_s: float
    settings: Settings
    started_at: float = field(default_factory=time.monotonic)
    # Renders a text template against the run's context (run inputs, upstream outputs)
    # plus `extra` variables at top level; always returns a string.
    render_text: Callable[[str, dict[str, Any]], str] = field(default=lambda text, extra: text)
    # Outputs a resume supplied: a human-in-the-loop node finishes with them instead of asking again.
    resume: dict[str, Any] | None = None
    # Records a run event of this node while it runs (e.g. LLM token chunks); best effort, and
    # never the checkpoint: only the outputs `run` returns are.
    emit_event: Callable[[str, dict[str, Any]], None] = field(default=lambda event_type, data: None)
    # Facts the node reports about its attempt besides its outputs (which model answered, token
    # usage, latency): filled by the node, stored by the executor with the attempt.
    report: dict[str, Any] = field(default_factory=dict)
    # The node's declared `outputs` (name -> type), for node types that check their own answer.
    declared_outputs: dict[str, str] | None = None
    # The model registry of this process (llm nodes); None where no model may be called.
    models: ModelSource | None = None
    # Starts child runs (composite nodes); None where none may be started.
    children: ChildRuns | None = None
    # Resolves library prompts (llm, intent); None where there is no library.
    prompts: PromptSource | None = None

    def remaining_s(self) -> float:
        """Seconds left before this attempt's timeout (never negative)."""
        return max(0.0, self.timeout_s - (time.monotonic() - self.started_at))


class Interrupt(Exception):
    """Raised by a node's `run` to pause the run until a person answers (question, input form).

    Not an error: the executor records the interrupt, frees the worker, and the node is run
    again with `ctx.resume` set once the answer arrives.
    """

    def __init__(self, kind: str, data: dict[str, Any]) -> None:
        self.kind = kind
        self.data = data
        super().__init__(f"waiting for {kind}")


class WaitForChildren(Exception):
    """Raised by a composite node's `run` once it started its child runs with `ctx.children`.

    The executor parks the node (`delegated`, holding no worker, lease or slot) and sends the
    children; the end of the last child queues the node again with `ctx.resume` set to that
    child's outcome (`child_run_id`, `status`, `outputs`, `error`).
    """

    def __init__(self, child_run_ids: list[str]) -> None:
        self.child_run_ids = child_run_ids
        super().__init__(f"waiting for {len(child_run_ids)} child run(s)")


class NodeType(ABC, Generic[ConfigT]):
    """A kind of node. Subclasses set `type_name`, `Config` and implement `run`."""

    type_name: ClassVar[str]
    Config: ClassVar[type[NodeConfig]]
    # "all": runs only when every incoming edge is active; "any": when at least one is (joins).
    join: ClassVar[Literal["all", "any"]] = "all"
    # Config fields the engine does not render; the node renders them itself with ctx.render_text.
    # They are still scanned for references at definition time.
    raw_fields: ClassVar[frozenset[str]] = frozenset()
    # Config fields that are neither rendered nor scanned for references (e.g. source code).
    opaque_fields: ClassVar[frozenset[str]] = frozenset()
    # Output key whose value names the port the node chose (branching node types).
    port_output: ClassVar[str | None] = None
    # Output key recorded as `message` in the node's `node.succeeded` event, in the commit's
    # transaction (message nodes: what the run's stream shows). None for every other type.
    event_output: ClassVar[str | None] = None
    # Composite types with an inline body (batch, loop): the config field holding the body's nodes
    # (compiled as a nested graph and run as child runs of the node) and the one holding the body's
    # outputs (each child run's outputs). None for every other type.
    body_field: ClassVar[str | None] = None
    body_outputs_field: ClassVar[str] = "outputs"
    # Names the body's templates see at top level, taken from its child run's inputs (`item`).
    body_locals: ClassVar[frozenset[str]] = frozenset()
    # A pure type computes its outputs from its inputs alone (no I/O, no services of the context,
    # no questions, no child runs), within the template limits. Its node is executed before it is
    # claimed and committed only if it is still the untouched queued node it was (the executor's
    # unclaimed path, docs/benchmarks.md): a duplicate or a crashed execution costs nothing.
    pure: ClassVar[bool] = False
    # Body-only types (set_variable, break, continue): the composite type whose inline body alone
    # may hold them (refused anywhere else at save time). None: allowed anywhere.
    only_inside: ClassVar[str | None] = None

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    @classmethod
    def ports(cls, config: NodeConfig) -> frozenset[str]:
        """Named output ports besides the default one (e.g. a selector's branches)."""
        return frozenset()

    @classmethod
    def output_fields(cls, config: NodeConfig, declared: Mapping[str, str] | None) -> frozenset[str] | None:
        """Output field names other nodes may reference; None means any (dynamic outputs)."""
        return frozenset(declared) if declared else None

    @classmethod
    def body_inputs(cls, config: NodeConfig, input_names: frozenset[str]) -> dict[str, str]:
        """The inputs (name -> type) of the body's child runs, given the node's own input names."""
        return {}

    @classmethod
    def check_body(cls, config: NodeConfig, body: CompiledWorkflow) -> list[tuple[str, str | None, str]]:
        """Problems (inner node id, field, message) of a compiled inline body that only this type
        can see (a loop: set_variable naming no loop variable). Called at save time."""
        return []

    @classmethod
    def resume_outputs(cls, asked: dict[str, Any], answer: Any) -> dict[str, Any]:
        """The outputs a person's `answer` to this node's interrupt gives (InvalidInputs if it does not fit)."""
        raise NotImplementedError(f"node type {cls.type_name!r} does not ask questions")

    @abstractmethod
    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Execute one attempt and return the node's outputs."""
