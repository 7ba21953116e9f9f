"""The unclaimed path of pure nodes (engine/store/sql/unclaimed.py): executed before any claim,
committed once, and as safe as a claimed node against duplicates, crashes and failures."""
from __future__ import annotations

import signal
import time
import uuid
from typing import Any

import psycopg
import pytest

from engine.db import get_engine
from engine.dispatch import DramatiqDispatcher, make_broker
from engine.executor import Executor
from engine.reconciler import Reconciler
from engine.service import Relayflow
from engine.settings import Settings
from engine.store import Claim, Signal, Store
from engine.tokens import DEFAULT_SPACE
from tests.conftest import wait_for
from tests.log_lines import log_events

pytestmark = pytest.mark.integration

PAIR = {"nodes": [{"id": "a", "type": "template", "config": {"template": "x"}},
                  {"id": "b", "type": "template", "after": ["a"], "config": {"template": "{{ a.text }}y"}}],
        "outputs": {"b": "{{ b.text }}"}}
# ~2-4 s of rendering on this kind of machine: long enough to kill its worker in the middle
SLOW = "{% for i in range(10000) %}{% for j in range(80) %}{% if loop.index == 0 %}{% endif %}{% endfor %}{% endfor %}"
CHAIN = {"nodes": [{"id": "before", "type": "template", "config": {"template": "start"}},
                   {"id": "slow", "type": "template", "after": ["before"], "config": {"template": SLOW + "slow"}},
                   {"id": "after", "type": "template", "config": {"template": "{{ before.text }} {{ slow.text }}"}}],
         "outputs": {"result": "{{ after.text }}"}}


def _sql(settings: Settings, query: str, *params: Any) -> list[tuple[Any, ...]]:
    url = (settings.database_url or "").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def _events(settings: Settings, run_id: str) -> list[tuple[str, str | None]]:
    return [(t, n) for t, n in _sql(settings, "SELECT type, node_id FROM run_events WHERE run_id = %s ORDER BY id",
                                    run_id)]


def _uncap(settings: Settings) -> None:
    """The default space without a cap on running nodes: only there do pure nodes go unclaimed."""
    assert Store.from_engine(get_engine(settings)).catalog.set_space_cap("default", 0)


def _peek(store: Store, run_id: uuid.UUID) -> Claim | None:
    """What a pure delivery of node `a` reads (the space uncapped), as the claim it stands for."""
    found = store.unclaimed.peek(run_id, "a", 0, budgeted=True)
    return found.claim if found is not None else None


def _in_process(settings: Settings) -> tuple[Store, Relayflow, Executor, Reconciler]:
    _uncap(settings)
    store = Store.from_engine(get_engine(settings))
    dispatcher = DramatiqDispatcher(make_broker(settings), settings.queue_name)
    executor = Executor(store, dispatcher, settings)
    return store, Relayflow(store, dispatcher, settings), executor, Reconciler(executor, dispatcher, settings)


def test_a_pure_node_executed_twice_at_once_commits_once_and_queues_its_successor_once(
        settings: Settings, token: str) -> None:
    store, service, _executor, _reconciler = _in_process(settings)
    workflow = service.create_workflow(DEFAULT_SPACE, "twice", None, PAIR)["workflow_id"]
    run_id = uuid.UUID(service.submit_run(DEFAULT_SPACE, workflow, {})["run_id"])
    # Given two deliveries of node a that both read it untouched (two workers at once)
    first, second = (_peek(store, run_id) for _ in range(2))
    assert first is not None and second is not None and first.node_row_id == second.node_row_id
    # When both commit their outputs
    signals = [Signal("b", 1, 1, 1, False)]
    won = store.unclaimed.commit(run_id, "a", first, output={"text": "first"}, port=None, signals=signals,
                                 event_data={"attempt": 1}, worker="w1")
    lost = store.unclaimed.commit(run_id, "a", second, output={"text": "second"}, port=None, signals=signals,
                                  event_data={"attempt": 1}, worker="w2")
    # Then exactly one landed: its output, one attempt, its successor queued once, the run started once
    assert won.decision.committed and won.decision.queued == ("b",) and won.run_started
    assert not lost.decision.committed and lost.decision.queued == () and not lost.run_started
    run = service.get_run(DEFAULT_SPACE, str(run_id))
    a = next(n for n in run["nodes"] if n["node_id"] == "a")
    assert run["status"] == "running" and a["status"] == "succeeded" and a["output"] == {"text": "first"}
    assert a["attempts"] == 1
    assert _sql(settings, "SELECT worker FROM node_runs WHERE id = %s", first.node_row_id) == [("w1",)]
    assert _events(settings, str(run_id)) == [
        ("run.queued", None), ("run.started", None), ("node.started", "a"), ("node.succeeded", "a")]
    # And a later delivery finds nothing to do on either path
    assert _peek(store, run_id) is None
    assert store.lifecycle.claim(run_id, "a", lease_s=30, grace_s=0) is None


def test_a_claimed_node_is_never_committed_by_the_unclaimed_path(settings: Settings, token: str) -> None:
    store, service, _executor, _reconciler = _in_process(settings)
    workflow = service.create_workflow(DEFAULT_SPACE, "claimed", None, PAIR)["workflow_id"]
    run_id = uuid.UUID(service.submit_run(DEFAULT_SPACE, workflow, {})["run_id"])
    # Given a delivery that read node a untouched, and another worker that claims it meanwhile
    peeked = _peek(store, run_id)
    claim = store.lifecycle.claim(run_id, "a", lease_s=30, grace_s=0)
    assert peeked is not None and claim is not None
    # When the unclaimed execution commits
    late = store.unclaimed.commit(run_id, "a", peeked, output={"text": "late"}, port=None,
                                  signals=[Signal("b", 1, 1, 1, False)], event_data={"attempt": 1}, worker=None)
    # Then nothing landed: the claim owns the node
    assert not late.decision.committed
    node = service.get_run(DEFAULT_SPACE, str(run_id))["nodes"][0]
    assert node["status"] == "running" and node["output"] is None


def test_a_pure_node_the_reconciler_resent_takes_the_claim_so_its_crashes_count(settings: Settings,
                                                                                token: str) -> None:
    store, service, executor, reconciler = _in_process(settings.model_copy(update={"resend_queued_after_s": 0.0}))
    workflow = service.create_workflow(DEFAULT_SPACE, "resent", None, PAIR)["workflow_id"]
    run_id = uuid.UUID(service.submit_run(DEFAULT_SPACE, workflow, {})["run_id"])
    # Given a node whose message looked lost (its executions may be killing their workers)
    assert _peek(store, run_id) is not None
    time.sleep(0.05)
    assert reconciler.sweep().resent >= 1
    # Then the unclaimed path no longer takes it, and a pure delivery claims it: the attempt counts
    assert _peek(store, run_id) is None
    executor.run_node(str(run_id), "a", pure=True)
    node = service.get_run(DEFAULT_SPACE, str(run_id))["nodes"][0]
    assert node["status"] == "succeeded" and node["attempts"] == 1


def test_a_failing_pure_node_is_claimed_and_fails_as_its_first_attempt(api: Any, inline_worker: Any,
                                                                       settings: Settings) -> None:
    # Given a template that fails when rendered (its input is not a number), in an uncapped space
    _uncap(settings)
    wf = api.create_workflow({"inputs": {"n": {"type": "string", "required": True}},
                              "nodes": [{"id": "calc", "type": "template",
                                         "config": {"template": "{{ 1 / (inputs.n | int) }}"}}],
                              "outputs": {"x": "{{ calc.text }}"}})
    # When it runs
    run = api.wait(api.submit(wf, {"n": "0"}))
    # Then the run failed at it, after one attempt, with its start and its failure recorded
    assert run["status"] == "failed" and run["error"]["node_id"] == "calc", run
    calc = api.node(run, "calc")
    assert calc["status"] == "failed" and calc["attempts"] == 1 and "division" in calc["error"]["message"]
    assert [e for e in _events(settings, run["run_id"]) if e[1] == "calc"] == [
        ("node.started", "calc"), ("node.failed", "calc")]


def test_a_worker_killed_while_executing_a_pure_node_leaves_it_queued_and_the_run_completes(
        api: Any, start_worker: Any, settings: Settings) -> None:
    env = {"RELAYFLOW_RESEND_QUEUED_AFTER_S": "2", "RELAYFLOW_RECONCILE_EVERY_S": "0.5"}
    # Given a worker rendering a slow template, unclaimed (the space has no cap)
    _uncap(settings)
    worker = start_worker(env=env)
    run_id = api.submit(api.create_workflow(CHAIN))
    wait_for(lambda: api.node(api.run(run_id), "before")["status"] == "succeeded", timeout_s=30)
    time.sleep(0.7)
    slow = api.node(api.run(run_id), "slow")
    assert slow["status"] == "queued" and slow["attempts"] == 0, slow  # executing, yet nothing written
    # When the whole worker process group is killed with SIGKILL and a new worker starts
    worker.kill(signal.SIGKILL)
    second = start_worker(env=env)
    run = api.wait(run_id, timeout_s=90)
    # Then the run completes; the lost execution wrote nothing, the reconciler re-sent the node, which
    # was then claimed (so had it killed its worker again, the crash would have counted)
    assert run["status"] == "succeeded" and run["outputs"] == {"result": "start slow"}, run
    assert [api.node(run, n)["attempts"] for n in ("before", "slow", "after")] == [1, 1, 1]
    resent = log_events(second.log_path, "repair.message_resent")
    assert [(r["run_id"], r["node_id"]) for r in resent] == [(run_id, "slow")], second.log_path.read_text()
    events = _events(settings, run_id)
    for node_id in ("before", "slow", "after"):
        assert events.count(("node.started", node_id)) == 1 and events.count(("node.succeeded", node_id)) == 1
    assert events[-1] == ("run.succeeded", None)


def test_a_capped_spaces_slow_templates_never_run_more_than_its_cap_at_once(
        api: Any, start_worker: Any, settings: Settings) -> None:
    # Given a hostile author's space capped at 2 running nodes, and a worker with 8 threads
    assert Store.from_engine(get_engine(settings)).catalog.set_space_cap("default", 2)
    start_worker(threads=8)
    slow = {"nodes": [{"id": "t", "type": "template", "config": {"template": SLOW[:SLOW.index("80")] + "25"
                                                                   + SLOW[SLOW.index("80") + 2:] + "done"}}],
            "outputs": {"t": "{{ t.text }}"}}
    # When it submits 6 runs, each one slow template (~1 s of rendering)
    workflow = api.create_workflow(slow)
    run_ids = [api.submit(workflow) for _ in range(6)]
    for run_id in run_ids:
        assert api.wait(run_id, timeout_s=90)["status"] == "succeeded"
    # Then at no moment did more than 2 of them execute: pure nodes of a capped space are claimed
    # and counted (unclaimed, all 6 would have run at once, beside the cap)
    spans = _sql(settings, "SELECT started_at, finished_at FROM node_runs WHERE run_id = ANY(%s::uuid[])",
                 run_ids)
    assert len(spans) == 6
    most = max(sum(1 for s, f in spans if s <= moment < f) for moment, _ in spans)
    assert most <= 2, spans


# ~0.3-0.6 s of rendering: well past the unclaimed budget of a capped space (RELAYFLOW_UNCLAIMED_BUDGET_MS)
MEDIUM = "{% for i in range(2000) %}{% for j in range(80) %}{% if loop.index == 0 %}{% endif %}{% endfor %}{% endfor %}"


def _capped_in_process(settings: Settings, cap: int) -> tuple[Store, Relayflow, Executor]:
    store = Store.from_engine(get_engine(settings))
    assert store.catalog.set_space_cap("default", cap)
    dispatcher = DramatiqDispatcher(make_broker(settings), settings.queue_name)
    return store, Relayflow(store, dispatcher, settings), Executor(store, dispatcher, settings)


def _counted(settings: Settings, run_id: uuid.UUID) -> dict[str, bool]:
    return dict(_sql(settings, "SELECT node_id, counted FROM node_runs WHERE run_id = %s", run_id))  # type: ignore[arg-type]


def test_a_capped_spaces_quick_pure_nodes_go_unclaimed_and_a_slow_one_is_claimed_past_the_budget(
        settings: Settings, token: str) -> None:
    # Given a space capped at 2, a quick template and a slow one after it
    store, service, executor = _capped_in_process(settings, 2)
    definition = {"nodes": [{"id": "a", "type": "template", "config": {"template": "x"}},
                            {"id": "b", "type": "template", "after": ["a"], "config": {"template": MEDIUM + "{{ a.text }}y"}}],
                  "outputs": {"b": "{{ b.text }}"}}
    workflow = service.create_workflow(DEFAULT_SPACE, "budget", None, definition)["workflow_id"]
    run_id = uuid.UUID(service.submit_run(DEFAULT_SPACE, workflow, {})["run_id"])
    # When each is delivered as a pure node's message
    executor.run_node(str(run_id), "a", pure=True)
    executor.run_node(str(run_id), "b", pure=True)
    # Then the quick one ran unclaimed (not counted into the space's running nodes), the slow one
    # was stopped at the budget and claimed (counted), and ran once to the end, as one attempt
    run = service.get_run(DEFAULT_SPACE, str(run_id))
    assert run["status"] == "succeeded" and run["outputs"] == {"b": "xy"}, run
    assert _counted(settings, run_id) == {"a": False, "b": True}
    assert [n["attempts"] for n in run["nodes"]] == [1, 1]
    assert _events(settings, str(run_id)) == [
        ("run.queued", None), ("run.started", None), ("node.started", "a"), ("node.succeeded", "a"),
        ("node.started", "b"), ("node.succeeded", "b"), ("run.succeeded", None)]
    assert _sql(settings, "SELECT running_nodes FROM spaces WHERE id = 'default'") == [(0,)]


def test_a_capped_space_without_room_or_without_a_budget_claims_its_pure_nodes(settings: Settings,
                                                                               token: str) -> None:
    store, service, executor = _capped_in_process(settings, 1)
    workflow = service.create_workflow(DEFAULT_SPACE, "full", None, PAIR)["workflow_id"]
    first, second = (uuid.UUID(service.submit_run(DEFAULT_SPACE, workflow, {})["run_id"]) for _ in range(2))
    # Given a space capped at 1 whose one slot is taken (a claimed node of another run)
    assert store.lifecycle.claim(first, "a", lease_s=30, grace_s=0, space_cap=1) is not None
    # Then a pure node of the space is not taken unclaimed while it is full
    assert store.unclaimed.peek(second, "a", 8, budgeted=True) is None
    # And once it has room, only by workers that give such nodes a budget
    assert store.catalog.set_space_cap("default", 2)
    assert store.unclaimed.peek(second, "a", 8, budgeted=False) is None
    found = store.unclaimed.peek(second, "a", 8, budgeted=True)
    assert found is not None and found.capped
    # And a worker without a budget (RELAYFLOW_UNCLAIMED_BUDGET_MS=0) claims it, counted into the space
    unbudgeted = Executor(store, executor.dispatcher, settings.model_copy(update={"unclaimed_budget_ms": 0.0}))
    unbudgeted.run_node(str(second), "a", pure=True)
    assert _counted(settings, second)["a"] is True
    assert next(n for n in service.get_run(DEFAULT_SPACE, str(second))["nodes"] if n["node_id"] == "a")["status"] \
        == "succeeded"


def test_the_first_node_of_each_batch_item_goes_unclaimed_too(api: Any, inline_worker: Any,
                                                              settings: Settings) -> None:
    # Given a batch of 6 items, 2 at a time, whose body starts with a template (the space's default cap)
    workflow = api.create_workflow({
        "inputs": {"words": {"type": "array", "required": True}},
        "nodes": [{"id": "each", "type": "batch",
                   "config": {"items": "{{ inputs.words }}", "concurrency": 2,
                              "nodes": [{"id": "shout", "type": "template", "config": {"template": "{{ item | upper }}"}},
                                        {"id": "mark", "type": "template", "config": {"template": "{{ shout.text }}!"}}],
                              "outputs": {"text": "{{ mark.text }}"}}}],
        "outputs": {"texts": "{{ each.text }}"}})
    words = ["a", "b", "c", "d", "e", "f"]
    # When it runs (the first two items start when the batch parks, each later one when one ends)
    run = api.wait(api.submit(workflow, {"words": words}))
    # Then every item's nodes, its first included, ran without a claim: none counted into the space
    assert run["status"] == "succeeded" and run["outputs"] == {"texts": ["A!", "B!", "C!", "D!", "E!", "F!"]}, run
    rows = _sql(settings, "SELECT n.node_id, n.counted, n.attempts FROM node_runs n JOIN runs c ON c.id = n.run_id "
                          "WHERE c.parent_run_id = %s", run["run_id"])
    assert sorted(rows) == sorted([("shout", False, 1), ("mark", False, 1)] * len(words)), rows
