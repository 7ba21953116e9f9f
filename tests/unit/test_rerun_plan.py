"""Planning a rerun (no servers): which outcomes are reused, and the frontier's join counters."""
from __future__ import annotations

import pytest

from engine.errors import InvalidInputs
from engine.rerun_plan import FrontierRow, Outcome, plan_rerun
from tests.unit.test_compiler import TRIAGE, compile_

S, SKIP = Outcome("succeeded"), Outcome("skipped", settled=True)


def urgent_failed() -> dict[str, Outcome]:
    """TRIAGE's outcomes when `route` chose `urgent` and `urgent` failed the run (`join` never reached)."""
    return {"clean": S, "route": Outcome("succeeded", "urgent", True), "urgent": Outcome("failed"),
            "normal": SKIP, "join": Outcome("cancelled")}


def test_a_rerun_from_the_failed_node_reuses_its_upstream_and_waits_the_join_on_it() -> None:
    plan = plan_rerun(compile_(TRIAGE), "urgent", urgent_failed(), "r1")
    assert set(plan.reused) == {"clean", "route", "normal"}
    assert plan.rerun == ("urgent", "join")
    # the join saw the reused skip of `normal` (decided, inactive) and waits for `urgent` alone
    assert plan.frontier == (FrontierRow("urgent", "queued", 2, False, 0, 2),  # after route.urgent and clean
                             FrontierRow("join", "waiting", 2, True, 1, 0))
    assert plan.queued == ("urgent",) and plan.remaining == 2


def test_a_node_with_no_recorded_outcome_is_rerun_and_a_skip_it_decides_propagates() -> None:
    # Given `normal` has no row in the source (the run ended before its skip was recorded)
    outcomes = urgent_failed()
    del outcomes["normal"]
    plan = plan_rerun(compile_(TRIAGE), "urgent", outcomes, "r1")
    # Then `normal` is decided skipped again from the reused route, and the join counts it
    rows = {r.node_id: r for r in plan.frontier}
    assert rows["normal"].status == "skipped"
    assert rows["join"] == FrontierRow("join", "waiting", 2, True, 1, 0)
    assert plan.remaining == 2  # urgent and join: the skip is decided already


def test_a_parallel_branch_the_failure_cancelled_runs_again() -> None:
    wf = compile_({"nodes": [{"id": "p", "type": "step"}, {"id": "q", "type": "step", "after": ["p"]},
                             {"id": "r", "type": "step"}]})
    plan = plan_rerun(wf, "r", {"p": S, "q": Outcome("cancelled"), "r": Outcome("failed")}, "r1")
    assert plan.reused == ("p",) and set(plan.queued) == {"q", "r"}


@pytest.mark.parametrize(("from_node", "says"), [
    ("nope", "not a node of this workflow"),
    ("join", "urgent (failed)"),  # upstream of it never succeeded
    ("normal", "do not activate it"),  # the branch route did not take
])
def test_a_rerun_that_cannot_be_planned_is_refused_naming_from_node(from_node: str, says: str) -> None:
    with pytest.raises(InvalidInputs) as refused:
        plan_rerun(compile_(TRIAGE), from_node, urgent_failed(), "r1")
    assert refused.value.errors[0]["field"] == "from_node" and says in refused.value.errors[0]["message"]


def test_a_continued_failure_is_reused_but_the_failure_that_ended_the_run_is_not() -> None:
    assert Outcome("failed", "error", settled=True).reusable
    assert not Outcome("failed").reusable and not Outcome("cancelled").reusable
