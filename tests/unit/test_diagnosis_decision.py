"""The diagnosis decision (engine/diagnosis.py) over hand-built facts: no servers."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.diagnosis import Deployment, NodeShape, RunFacts, diagnose

NOW = datetime(2026, 12, 3, 8, 0, 0, tzinfo=UTC)
DEPLOYMENT = Deployment(queue="relayflow", heartbeat_s=5.0, max_crashes=3, space_cap=8)
CHAIN = [NodeShape("a", "http"), NodeShape("b", "code", ("a",), max_attempts=4), NodeShape("c", "template", ("b",))]


def _run(**extra: Any) -> dict[str, Any]:
    return {"id": uuid.UUID(int=7), "status": "running", "space_id": "default", "version_id": 1, "body": "",
            "created_at": NOW - timedelta(minutes=1), "started_at": NOW - timedelta(seconds=50),
            "finished_at": None, "deadline_at": None, "parent_run_id": None, "parent_node_id": None,
            "db_now": NOW, "max_running_nodes": None, "running_nodes": 0, "live_workers": 2, "queue_workers": 2,
            **extra}


def _row(node_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"node_id": node_id, "status": status, "attempts": 0, "crashes": 0, "error": None,
            "lease_expires_at": None, "next_attempt_at": None, "queued_at": NOW - timedelta(seconds=40),
            "started_at": None, "worker": None, "last_failure": None, "children_total": 0, "children_done": 0,
            "children_started": 0, "worker_heartbeat_at": None, "waitlisted": False, **extra}


def _one(facts: RunFacts, node_id: str, shapes: list[NodeShape] = CHAIN) -> dict[str, Any]:
    return next(n for n in diagnose(facts, shapes, DEPLOYMENT)["nodes"] if n["node_id"] == node_id)


def test_a_queued_node_with_no_worker_on_its_queue_says_so_plainly() -> None:
    facts = RunFacts(_run(live_workers=1, queue_workers=0), [_row("a", "queued")], [], {})
    found = diagnose(facts, CHAIN, DEPLOYMENT)
    first = found["nodes"][0]
    assert first["waiting_for"] == "worker" and first["live_workers"] == 0
    assert "NO live worker consumes queue relayflow" in first["detail"]
    assert "40 s ago" in first["detail"] and first["since"] == (NOW - timedelta(seconds=40)).isoformat()
    assert "No live worker consumes queue relayflow" in found["summary"]


def test_nodes_not_reached_wait_for_their_predecessors_by_name() -> None:
    facts = RunFacts(_run(), [_row("a", "running", worker="h:1:abc", lease_expires_at=NOW + timedelta(seconds=20),
                                   worker_heartbeat_at=NOW - timedelta(seconds=1), started_at=NOW)], [], {})
    b, c = _one(facts, "b"), _one(facts, "c")
    assert b["waiting_for"] == "predecessors" and b["predecessors"] == [{"node_id": "a", "status": "running"}]
    assert "a (running)" in b["detail"]
    assert c["predecessors"] == [{"node_id": "b", "status": "waiting"}]


def test_final_nodes_are_left_out_and_a_final_run_has_nothing_waiting() -> None:
    facts = RunFacts(_run(), [_row("a", "succeeded"), _row("b", "queued")], [], {})
    assert [n["node_id"] for n in diagnose(facts, CHAIN, DEPLOYMENT)["nodes"]] == ["b", "c"]
    ended = RunFacts(_run(status="failed", finished_at=NOW), [_row("a", "failed")], [], {})
    found = diagnose(ended, CHAIN, DEPLOYMENT)
    assert found["nodes"] == [] and "ended failed" in found["summary"]


def test_a_retry_names_when_it_is_due_the_error_and_the_attempt() -> None:
    failed_at = NOW - timedelta(seconds=2)
    row = _row("b", "retrying", attempts=1, next_attempt_at=NOW + timedelta(seconds=30),
               error={"kind": "error", "message": "HTTP 503 from http://127.0.0.1:9/"},
               last_failure={"at": failed_at.isoformat()})
    found = _one(RunFacts(_run(), [_row("a", "succeeded"), row], [], {}), "b")
    assert found["waiting_for"] == "retry" and found["attempt"] == 2 and found["max_attempts"] == 4
    assert found["retry_at"] == (NOW + timedelta(seconds=30)).isoformat() and found["since"] == failed_at.isoformat()
    assert "HTTP 503" in found["detail"] and "attempt 2 of 4" in found["detail"] and "in 30 s" in found["detail"]


def test_a_due_retry_waits_for_a_worker() -> None:
    row = _row("b", "retrying", attempts=1, next_attempt_at=NOW - timedelta(seconds=3))
    found = _one(RunFacts(_run(queue_workers=0, live_workers=0), [_row("a", "succeeded"), row], [], {}), "b")
    assert found["waiting_for"] == "worker" and "retry was due" in found["detail"]


def test_a_live_workers_lease_names_the_worker() -> None:
    row = _row("a", "running", attempts=1, worker="h:1:abc", started_at=NOW - timedelta(seconds=5),
               lease_expires_at=NOW + timedelta(seconds=25), worker_heartbeat_at=NOW - timedelta(seconds=2))
    found = _one(RunFacts(_run(), [row], [], {}), "a")
    assert found["waiting_for"] == "lease" and found["worker"] == "h:1:abc" and found["worker_alive"] is True
    assert "reconciler_action" not in found and "alive" in found["detail"]


def test_a_dead_workers_lease_says_what_the_reconciler_will_do() -> None:
    lease = NOW + timedelta(seconds=10)
    row = _row("a", "running", attempts=1, worker="h:1:abc", started_at=NOW - timedelta(seconds=30),
               lease_expires_at=lease, worker_heartbeat_at=NOW - timedelta(seconds=16))
    found = _one(RunFacts(_run(), [row], [], {}), "a")
    assert found["worker_alive"] is False and found["reconciler_action"] == "re-queue it as crash 1 of 3"
    assert "looks dead" in found["detail"] and lease.isoformat() in found["detail"]
    # the last crash allowed fails the node instead
    last = _one(RunFacts(_run(), [{**row, "crashes": 2}], [], {}), "a")
    assert last["reconciler_action"] == "fail it as `crashed` (crash 3 of 3)"


def test_an_expired_lease_with_no_worker_alive_says_nothing_sweeps() -> None:
    row = _row("a", "running", worker="h:1:abc", lease_expires_at=NOW - timedelta(seconds=4),
               worker_heartbeat_at=NOW - timedelta(seconds=60))
    found = _one(RunFacts(_run(live_workers=0, queue_workers=0), [row], [], {}), "a")
    assert "expired" in found["detail"] and "no live worker runs the reconciler" in found["detail"]


def test_an_interrupt_waits_for_an_answer_with_its_event() -> None:
    asked = NOW - timedelta(seconds=9)
    facts = RunFacts(_run(status="interrupted"), [_row("a", "interrupted")],
                     [{"event_id": "e1", "node_id": "a", "type": "question", "created_at": asked}], {})
    found = _one(facts, "a")
    assert found["waiting_for"] == "answer" and found["event_id"] == "e1" and found["interrupt_type"] == "question"
    assert found["since"] == asked.isoformat() and "relayflow resume" in found["detail"]


def test_a_composite_node_shows_its_childrens_progress_and_the_live_ones() -> None:
    child = {"run_id": str(uuid.UUID(int=9)), "status": "running", "item_index": 2, "started_at": NOW}
    row = _row("a", "delegated", children_total=5, children_done=2, children_started=3)
    found = _one(RunFacts(_run(), [row], [], {"a": [child]}), "a", [NodeShape("a", "batch")])
    assert found["waiting_for"] == "children"
    assert found["children"]["done"] == 2 and found["children"]["total"] == 5
    assert found["children"]["live"][0]["run_id"] == child["run_id"] and "2 of 5 ended" in found["detail"]


def test_a_waitlisted_node_names_its_space_cap() -> None:
    facts = RunFacts(_run(max_running_nodes=1, running_nodes=1), [_row("a", "queued", waitlisted=True)], [], {})
    found = _one(facts, "a")
    assert found["waiting_for"] == "space_cap"
    assert found["space"] == {"space_id": "default", "max_running_nodes": 1, "running_nodes": 1}
    assert "cap of 1 running node (1 running)" in found["detail"]


def test_a_run_past_its_deadline_waits_for_nothing_else() -> None:
    facts = RunFacts(_run(deadline_at=NOW - timedelta(seconds=1)), [_row("a", "queued")], [], {})
    assert {n["waiting_for"] for n in diagnose(facts, CHAIN, DEPLOYMENT)["nodes"]} == {"deadline"}
