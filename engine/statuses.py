"""Run, node and interrupt statuses, the sets the code reasons with, and the allowed transitions.

No I/O. The database mirrors these enums: migration 0006 puts a CHECK constraint on every
status column whose list is written out literally (a migration never changes with the code), and
tests/unit/test_statuses.py asserts that those lists, and every status literal in the SQL of
engine/store/sql/, are members of the right enum here (procrastinate's `Status` mirroring its
`CREATE TYPE … AS ENUM` is the model). Adding a status means: the enum, a new migration
replacing the CHECK, the transitions below, and the SQL that performs them.

A status is changed only by the SQL statements named in the transition tables, each one
conditional UPDATE (or INSERT) guarded by the status it leaves; no row back means another
statement won.
"""
from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Literal


class RunStatus(StrEnum):
    """Where a run is in its life (`runs.status`)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"


class NodeStatus(StrEnum):
    """Where one node of a run is (`node_runs.status`)."""

    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"
    # Waiting for its child runs (sub-workflow, batch, loop): holds no worker, no lease and no
    # space slot, like `interrupted`; the statement that ends its last child queues it again.
    DELEGATED = "delegated"


class InterruptStatus(StrEnum):
    """Whether a question or form a node asked has been answered (`run_interrupts.status`)."""

    PENDING = "pending"
    ANSWERED = "answered"


# The run statuses as a type for API models (pydantic renders a Literal inline in OpenAPI);
# tests/unit/test_statuses.py asserts it lists exactly RunStatus.
RunStatusName = Literal["queued", "running", "succeeded", "failed", "interrupted", "cancelled"]

# -- runs ---------------------------------------------------------------------------------------
# A final run never changes again.
FINAL_STATUSES: frozenset[RunStatus] = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
# A sync caller also gets its answer when the run waits for a person: waiting longer is useless.
SETTLED_STATUSES: frozenset[RunStatus] = FINAL_STATUSES | {RunStatus.INTERRUPTED}
# Not final: its nodes may still be claimed, it may be cancelled, its deadline still applies.
# A run waiting for a person (`interrupted`) is live: its other branches go on.
LIVE_STATUSES: frozenset[RunStatus] = frozenset(RunStatus) - FINAL_STATUSES
# Live and started: it has claimed a node, so it accepts node outcomes and events (the
# `run_lock` of the statements that record them).
UNDER_WAY_STATUSES: frozenset[RunStatus] = frozenset({RunStatus.RUNNING, RunStatus.INTERRUPTED})

# -- nodes --------------------------------------------------------------------------------------
# A final node is decided (or was stopped) and never changes again.
NODE_FINAL_STATUSES: frozenset[NodeStatus] = frozenset(
    {NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED})
# Not final: what a run that fails or is cancelled turns `cancelled`.
NODE_LIVE_STATUSES: frozenset[NodeStatus] = frozenset(NodeStatus) - NODE_FINAL_STATUSES
# A claim may take it (a retry once it is due): what the waitlist and the re-sender look at.
NODE_CLAIMABLE_STATUSES: frozenset[NodeStatus] = frozenset({NodeStatus.QUEUED, NodeStatus.RETRYING})
# Work a worker holds or will be sent (health's pending counts): not waiting for a predecessor
# or a person.
NODE_IN_FLIGHT_STATUSES: frozenset[NodeStatus] = NODE_CLAIMABLE_STATUSES | {NodeStatus.RUNNING}

# -- transitions --------------------------------------------------------------------------------
# status -> {status it may move to: the statements (engine/store/sql/) that move it}. The key
# None is "no row yet": the statuses a row is inserted with. Staying in a status is not a move.
RUN_TRANSITIONS: Mapping[RunStatus | None, Mapping[RunStatus, tuple[str, ...]]] = {
    # submit; a composite node's child runs; a rerun of an ended run
    None: {RunStatus.QUEUED: ("INSERT_RUN", "INSERT_ITEMS", "INSERT_RERUN")},
    RunStatus.QUEUED: {
        RunStatus.RUNNING: ("CLAIM", "COMMIT_UNCLAIMED"),  # its first node is claimed (or committed unclaimed)
        # cancel by a user; an ancestor ended; a batch item that never started (fail-fast, superseded)
        RunStatus.CANCELLED: ("END_RUN", "FAIL_RUN_AT_NODE", "CANCEL_UNSTARTED_CHILDREN"),
        RunStatus.FAILED: ("END_RUN",),  # past its deadline, or its outputs failed to render
    },
    RunStatus.RUNNING: {
        RunStatus.SUCCEEDED: ("FINISH_RUN",),  # every node decided, outputs rendered
        RunStatus.FAILED: ("FAIL_RUN_AT_NODE", "END_RUN"),  # a node failed for good; deadline; outputs
        RunStatus.CANCELLED: ("END_RUN", "FAIL_RUN_AT_NODE"),  # FAIL_RUN_AT_NODE: of an ancestor
        RunStatus.INTERRUPTED: ("INTERRUPT_NODE",),  # a node asks a person
    },
    RunStatus.INTERRUPTED: {
        RunStatus.RUNNING: ("RESUME_NODE",),  # its last pending interrupt is answered
        RunStatus.FAILED: ("FAIL_RUN_AT_NODE", "END_RUN"),  # another branch failed; deadline
        RunStatus.CANCELLED: ("END_RUN", "FAIL_RUN_AT_NODE"),
    },
    RunStatus.SUCCEEDED: {},
    RunStatus.FAILED: {},
    RunStatus.CANCELLED: {},
}

NODE_TRANSITIONS: Mapping[NodeStatus | None, Mapping[NodeStatus, tuple[str, ...]]] = {
    None: {
        # a root; a successor now ready; a rerun's frontier (INSERT_RERUN: engine/rerun_plan.py)
        NodeStatus.QUEUED: ("INSERT_RUN", "COMMIT_NODE", "COMMIT_UNCLAIMED", "PROPAGATE_SKIP", "INSERT_RERUN"),
        # a successor with undecided predecessors; a child run's root, until its parent waits
        NodeStatus.WAITING: ("COMMIT_NODE", "COMMIT_UNCLAIMED", "PROPAGATE_SKIP", "INSERT_RUN", "INSERT_ITEMS",
                             "INSERT_RERUN"),
        # a successor with no active incoming edge
        NodeStatus.SKIPPED: ("COMMIT_NODE", "COMMIT_UNCLAIMED", "PROPAGATE_SKIP", "INSERT_RERUN"),
        # a rerun's reused node: the source's outcome, copied final
        NodeStatus.SUCCEEDED: ("INSERT_RERUN",),
        NodeStatus.FAILED: ("INSERT_RERUN",),
        NodeStatus.CANCELLED: ("FAIL_RUN_AT_NODE", "END_RUN"),  # never reached by a run that ended
    },
    NodeStatus.WAITING: {
        # its last predecessor decided, an edge active; a child run's root starts when its parent is
        # parked (DELEGATE_NODE) or when an earlier child's end makes room (the statements that end runs)
        NodeStatus.QUEUED: ("COMMIT_NODE", "COMMIT_UNCLAIMED", "PROPAGATE_SKIP", "DELEGATE_NODE", "FINISH_RUN",
                            "FAIL_RUN_AT_NODE", "END_RUN"),
        NodeStatus.SKIPPED: ("COMMIT_NODE", "COMMIT_UNCLAIMED", "PROPAGATE_SKIP"),  # every predecessor decided, no edge active
        NodeStatus.CANCELLED: ("FAIL_RUN_AT_NODE", "END_RUN", "CANCEL_UNSTARTED_CHILDREN"),
    },
    NodeStatus.QUEUED: {
        NodeStatus.RUNNING: ("CLAIM",),
        # a pure type's node, executed unclaimed and still untouched (engine/store/sql/unclaimed.py)
        NodeStatus.SUCCEEDED: ("COMMIT_UNCLAIMED",),
        NodeStatus.CANCELLED: ("FAIL_RUN_AT_NODE", "END_RUN"),
    },
    NodeStatus.RETRYING: {
        NodeStatus.RUNNING: ("CLAIM",),  # its retry is due
        NodeStatus.CANCELLED: ("FAIL_RUN_AT_NODE", "END_RUN"),
    },
    NodeStatus.RUNNING: {
        NodeStatus.SUCCEEDED: ("COMMIT_NODE",),
        NodeStatus.FAILED: ("COMMIT_NODE", "FAIL_RUN_AT_NODE"),  # on_error default/branch; on_error fail
        NodeStatus.RETRYING: ("SCHEDULE_RETRY",),
        NodeStatus.INTERRUPTED: ("INTERRUPT_NODE",),
        NodeStatus.DELEGATED: ("DELEGATE_NODE",),  # it started its child runs
        NodeStatus.QUEUED: ("REQUEUE_CRASHED",),  # its lease expired: its worker died
        NodeStatus.CANCELLED: ("FAIL_RUN_AT_NODE", "END_RUN"),  # another node failed the run; cancel
    },
    NodeStatus.INTERRUPTED: {
        NodeStatus.QUEUED: ("RESUME_NODE",),  # answered: it runs again to finish with the answer
        NodeStatus.CANCELLED: ("FAIL_RUN_AT_NODE", "END_RUN"),
    },
    NodeStatus.DELEGATED: {
        # the statement that ends its (last) child run queues it again with the child's outcome
        NodeStatus.QUEUED: ("FINISH_RUN", "FAIL_RUN_AT_NODE", "END_RUN", "WAKE_PARENT"),  # WAKE_PARENT: a repair
        NodeStatus.CANCELLED: ("FAIL_RUN_AT_NODE", "END_RUN"),
    },
    NodeStatus.SUCCEEDED: {},
    NodeStatus.FAILED: {},
    NodeStatus.SKIPPED: {},
    NodeStatus.CANCELLED: {},
}

INTERRUPT_TRANSITIONS: Mapping[InterruptStatus | None, Mapping[InterruptStatus, tuple[str, ...]]] = {
    None: {InterruptStatus.PENDING: ("INTERRUPT_NODE",)},  # the column's default
    InterruptStatus.PENDING: {InterruptStatus.ANSWERED: ("RESUME_NODE",)},  # exactly once
    InterruptStatus.ANSWERED: {},
}


def run_may_move(source: RunStatus | str, target: RunStatus | str) -> bool:
    """Whether a run in `source` may move to `target`."""
    return RunStatus(target) in RUN_TRANSITIONS[RunStatus(source)]


def node_may_move(source: NodeStatus | str, target: NodeStatus | str) -> bool:
    """Whether a node in `source` may move to `target`."""
    return NodeStatus(target) in NODE_TRANSITIONS[NodeStatus(source)]
