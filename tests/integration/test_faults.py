"""Faults a production deployment meets, done for real: SIGKILLed workers, lost messages,
a flushed Redis, duplicate deliveries, and a worker whose lease expired."""
from __future__ import annotations

import signal
import time
import uuid
from typing import Any

import psycopg
import pytest
import redis as redis_lib

from engine.db import get_engine
from engine.dispatch import DramatiqDispatcher, make_broker
from engine.executor import Executor
from engine.reconciler import Reconciler
from engine.service import Relayflow
from engine.settings import Settings
from engine.store import Store
from engine.tokens import DEFAULT_SPACE
from tests.conftest import wait_for
from tests.log_lines import log_events

pytestmark = pytest.mark.integration

CHAIN = {"nodes": [
    {"id": "before", "type": "template", "config": {"template": "start"}},
    {"id": "slow", "type": "sleep", "after": ["before"], "config": {"seconds": 3}},
    {"id": "after", "type": "template", "config": {"template": "{{ before.text }} {{ slow.slept_s }} done"}},
], "outputs": {"result": "{{ after.text }}"}}


def _sql(settings: Settings, query: str, *params: Any) -> list[tuple[Any, ...]]:
    url = (settings.database_url or "").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def _event_count(settings: Settings, run_id: str, event_type: str, node_id: str | None = None) -> int:
    return _sql(settings, "SELECT count(*) FROM run_events WHERE run_id = %s AND type = %s"
                " AND (%s::text IS NULL OR node_id = %s)", run_id, event_type, node_id, node_id)[0][0]


def test_worker_killed_with_sigkill_mid_node_still_completes_the_run(api: Any, start_worker: Any,
                                                                     settings: Settings) -> None:
    # Given a worker executing a slow node
    worker = start_worker()
    run_id = api.submit(api.create_workflow(CHAIN))
    wait_for(lambda: api.node(api.run(run_id), "slow")["status"] == "running")
    # When the whole worker process group is killed with SIGKILL and a new worker starts
    worker.kill(signal.SIGKILL)
    second = start_worker()
    run = api.wait(run_id, timeout_s=60)
    # Then the run completes; the killed attempt counts; output committed once; downstream ran once
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"result": "start 3.0 done"}
    slow = api.node(run, "slow")
    assert slow["attempts"] == 2
    assert [e["error"]["kind"] for e in slow["attempt_errors"]] == ["crashed"]
    assert api.node(run, "before")["attempts"] == 1 and api.node(run, "after")["attempts"] == 1
    assert _event_count(settings, run_id, "node.succeeded", "slow") == 1
    assert _event_count(settings, run_id, "node.succeeded", "after") == 1
    assert _event_count(settings, run_id, "run.succeeded") == 1
    # And the new worker's reconciler logged the repair: one line, naming the run, node and attempt
    repairs = log_events(second.log_path, "repair.lease_expired")
    assert len(repairs) == 1, second.log_path.read_text()
    assert {k: repairs[0][k] for k in ("run_id", "node_id", "attempt", "space_id", "crashes", "outcome")} == {
        "run_id": run_id, "node_id": "slow", "attempt": 1, "space_id": "default", "crashes": 1,
        "outcome": "requeued"}, repairs[0]


def test_reconciler_resends_a_message_lost_from_redis(api: Any, start_worker: Any, redis_url: str) -> None:
    # Given a submitted run whose first message was lost (Redis flushed before any worker ran)
    run_id = api.submit(api.create_workflow(CHAIN))
    redis_lib.Redis.from_url(redis_url).flushdb()
    # When a worker starts
    worker = start_worker()
    # Then the reconciler re-sends the node from Postgres and the run completes, and says so once
    assert api.wait(run_id, timeout_s=60)["status"] == "succeeded"
    resent = log_events(worker.log_path, "repair.message_resent")
    assert len(resent) == 1 and resent[0]["run_id"] == run_id and resent[0]["node_id"] == "before", resent


def test_run_survives_redis_flushed_mid_run(api: Any, start_worker: Any, redis_url: str) -> None:
    # Given a run with a node in flight
    start_worker()
    run_id = api.submit(api.create_workflow(CHAIN))
    wait_for(lambda: api.node(api.run(run_id), "slow")["status"] == "running")
    # When Redis loses everything (queues, acks, heartbeats)
    redis_lib.Redis.from_url(redis_url).flushdb()
    # Then the run still completes, each node exactly once
    run = api.wait(run_id, timeout_s=60)
    assert run["status"] == "succeeded", run
    assert [n["attempts"] for n in run["nodes"]] == [1, 1, 1]


def test_duplicate_delivery_of_a_node_message_is_a_no_op(api: Any, start_worker: Any, settings: Settings,
                                                         redis_url: str) -> None:
    # Given a finished run
    start_worker()
    run_id = api.submit(api.create_workflow(CHAIN))
    assert api.wait(run_id, timeout_s=30)["status"] == "succeeded"
    events_before = _sql(settings, "SELECT count(*) FROM run_events WHERE run_id = %s", run_id)[0][0]
    # When every node's message is delivered again
    dispatcher = DramatiqDispatcher(make_broker(settings), settings.queue_name)
    for node_id in ("before", "slow", "after"):
        dispatcher.send(run_id, node_id)
    client = redis_lib.Redis.from_url(redis_url)
    wait_for(lambda: client.llen(f"dramatiq:{settings.queue_name}") == 0)
    time.sleep(1.0)
    # Then nothing ran again and nothing was recorded
    run = api.run(run_id)
    assert [n["attempts"] for n in run["nodes"]] == [1, 1, 1]
    assert _sql(settings, "SELECT count(*) FROM run_events WHERE run_id = %s", run_id)[0][0] == events_before


def _in_process(settings: Settings) -> tuple[Store, Relayflow, Executor, Reconciler]:
    store = Store.from_engine(get_engine(settings))
    dispatcher = DramatiqDispatcher(make_broker(settings), settings.queue_name)
    executor = Executor(store, dispatcher, settings)
    return store, Relayflow(store, dispatcher, settings), executor, Reconciler(executor, dispatcher, settings)


ONE_NODE = {"nodes": [{"id": "a", "type": "template", "config": {"template": "x"}}], "outputs": {"a": "{{ a.text }}"}}


def test_worker_whose_lease_expired_cannot_commit_over_a_newer_attempt(settings: Settings, token: str) -> None:
    store, service, _executor, reconciler = _in_process(settings)
    workflow = service.create_workflow(DEFAULT_SPACE, "fencing", None, ONE_NODE)
    run_id = uuid.UUID(service.submit_run(DEFAULT_SPACE, workflow["workflow_id"], {})["run_id"])
    # Given attempt 1 claimed with a lease that then expires, and the reconciler re-queues it
    stale = store.lifecycle.claim(run_id, "a", lease_s=0.05, grace_s=0)
    assert stale is not None
    time.sleep(0.2)
    assert reconciler.sweep().crashed == 1
    fresh = store.lifecycle.claim(run_id, "a", lease_s=30, grace_s=0)
    assert fresh is not None and fresh.epoch > stale.epoch
    # When the stale worker tries to commit, and then the fresh one does
    common = {"status": "succeeded", "error": None, "port": None, "signals": [],
              "event_type": "node.succeeded", "event_data": None}
    lost = store.lifecycle.commit_node(run_id, "a", stale, output={"text": "stale"}, **common)
    won = store.lifecycle.commit_node(run_id, "a", fresh, output={"text": "fresh"}, **common)
    # Then only the newer attempt's output is stored
    assert not lost.committed and won.committed and won.remaining == 0
    assert service.get_run(DEFAULT_SPACE, str(run_id))["nodes"][0]["output"] == {"text": "fresh"}


def test_node_that_keeps_crashing_fails_as_crashed_after_the_bound(settings: Settings, token: str) -> None:
    settings = settings.model_copy(update={"max_crashes": 2})
    store, service, executor, reconciler = _in_process(settings)
    workflow = service.create_workflow(DEFAULT_SPACE, "crashy", None, ONE_NODE)
    run_id = uuid.UUID(service.submit_run(DEFAULT_SPACE, workflow["workflow_id"], {})["run_id"])
    # Given a node whose worker dies twice (its lease expires each time)
    for _ in range(2):
        assert store.lifecycle.claim(run_id, "a", lease_s=0.05, grace_s=0) is not None
        time.sleep(0.2)
        assert reconciler.sweep().crashed == 1
    # Then the node fails as crashed, and so does the run
    run = service.get_run(DEFAULT_SPACE, str(run_id))
    assert run["status"] == "failed"
    assert run["nodes"][0]["status"] == "failed" and run["nodes"][0]["error"]["kind"] == "crashed"
    assert run["error"]["node_id"] == "a"


def test_run_survives_its_database_connections_being_killed(api: Any, start_worker: Any, settings: Settings) -> None:
    # Given a run with a node in flight
    worker = start_worker()
    run_id = api.submit(api.create_workflow(CHAIN))
    wait_for(lambda: api.node(api.run(run_id), "slow")["status"] == "running")
    # When every other connection to the database is terminated (as by a failover or restart)
    dbname = (settings.database_url or "").rsplit("/", 1)[1]
    killed = _sql(settings, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                            " WHERE datname = %s AND pid <> pg_backend_pid()", dbname)[0][0]
    assert killed >= 1
    # Then the workers reconnect and the run completes, each node exactly once
    run = api.wait(run_id, timeout_s=60)
    assert run["status"] == "succeeded", run
    assert [n["attempts"] for n in run["nodes"]] == [1, 1, 1]
    # And the worker logged each connection it found dropped
    lost = log_events(worker.log_path, "postgres.connection_lost")
    assert 1 <= len(lost) <= killed and all("terminat" in line["error"] for line in lost), worker.log_path.read_text()


def _started(settings: Settings, definition: dict[str, Any]) -> tuple[Store, Relayflow, Executor, Reconciler, Any, uuid.UUID]:
    """In-process engine parts (quick repairs), a workflow's compiled graph, and a submitted run."""
    store, service, executor, reconciler = _in_process(settings.model_copy(update={"resend_queued_after_s": 0.0}))
    created = service.create_workflow(DEFAULT_SPACE, "repair", None, definition)
    run_id = uuid.UUID(service.submit_run(DEFAULT_SPACE, created["workflow_id"], {})["run_id"])
    workflow = executor.versions.get(store.catalog.get_version(created["workflow_id"], DEFAULT_SPACE, None).id)
    return store, service, executor, reconciler, workflow, run_id


def _commit_as_a_dying_worker(store: Store, workflow: Any, run_id: uuid.UUID, node_id: str,
                              output: dict[str, Any], port: str | None = None) -> Any:
    """Claim and commit a node exactly as a worker does, then stop: no messages, no follow-up."""
    from engine.outcomes import merge_signals

    claim = store.lifecycle.claim(run_id, node_id, lease_s=30, grace_s=0)
    assert claim is not None
    return store.lifecycle.commit_node(run_id, node_id, claim, status="succeeded", output=output, error=None,
                                       port=port, signals=merge_signals(workflow.signals(node_id, port)),
                                       event_type="node.succeeded", event_data=None)


def test_reconciler_finishes_a_run_whose_last_commit_was_not_followed_up(settings: Settings, token: str) -> None:
    store, service, _executor, reconciler, workflow, run_id = _started(settings, ONE_NODE)
    # Given the last node committed by a worker that died before marking the run finished
    assert _commit_as_a_dying_worker(store, workflow, run_id, "a", {"text": "x"}).remaining == 0
    assert service.get_run(DEFAULT_SPACE, str(run_id))["status"] == "running"
    # When the reconciler sweeps
    time.sleep(0.05)
    assert reconciler.sweep().repaired == 1
    # Then the run is finished with its outputs
    run = service.get_run(DEFAULT_SPACE, str(run_id))
    assert run["status"] == "succeeded" and run["outputs"] == {"a": "x"}


BRANCHES = {"nodes": [
    {"id": "route", "type": "selector", "config": {"branches": [
        {"name": "urgent", "conditions": [{"left": 1, "op": ">", "right": 5}]}]}},
    {"id": "page", "type": "template", "after": ["route.urgent"], "config": {"template": "paged"}},
    {"id": "page_log", "type": "template", "config": {"template": "{{ page.text }} logged"}},
    {"id": "calm", "type": "template", "after": ["route.else"], "config": {"template": "calm"}},
    {"id": "join", "type": "aggregator", "inputs": {"values": ["{{ page_log.text }}", "{{ calm.text }}"]}},
], "outputs": {"result": "{{ join.value }}"}}


def test_reconciler_propagates_a_skip_a_dying_worker_did_not_signal(settings: Settings, token: str) -> None:
    store, service, executor, reconciler, workflow, run_id = _started(settings, BRANCHES)
    # Given the selector committed ("else": page skipped) by a worker that died right after
    decision = _commit_as_a_dying_worker(store, workflow, run_id, "route", {"branch": "else"}, port="else")
    assert decision.skipped == ("page",) and decision.queued == ("calm",)
    # When the reconciler sweeps, and the ready nodes run
    time.sleep(0.05)
    assert reconciler.sweep().repaired == 1
    executor.run_node(str(run_id), "calm")
    executor.run_node(str(run_id), "join")
    # Then the skip reached page_log, the join ran once, and the run finished
    run = service.get_run(DEFAULT_SPACE, str(run_id))
    statuses = {n["node_id"]: n["status"] for n in run["nodes"]}
    assert statuses == {"route": "succeeded", "page": "skipped", "page_log": "skipped",
                        "calm": "succeeded", "join": "succeeded"}
    assert run["status"] == "succeeded" and run["outputs"] == {"result": "calm"}
    assert reconciler.sweep().repaired == 0
