"""Retention: ended runs past their space's retention are deleted whole (child runs at any depth,
nodes, events, interrupts), in batches; young, live and kept-forever runs stay.

Runs really run (in-process worker, or a real worker process for the background loop); only
their end time is moved into the past, as the test's setup.
"""
from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
from typing import Any

import psycopg
import pytest

from engine.db import get_engine
from engine.retention import Retention
from engine.settings import Settings
from engine.store import Store
from engine.store.retention import RETENTION_LOCK_KEY, RetentionStore
from engine.tokens import DEFAULT_SPACE, issue_token
from tests.conftest import ROOT, ApiHelper, settings_env, wait_for

pytestmark = pytest.mark.integration

# A run with a nested batch (child runs two deep), a question answered (an interrupt row) and events.
TREE = {
    "inputs": {"numbers": {"type": "array", "default": [1, 2]}},
    "nodes": [
        {"id": "each", "type": "batch", "inputs": {"numbers": "{{ inputs.numbers }}"},
         "config": {"items": "{{ inputs.numbers }}", "outputs": {"t": "{{ inner.t }}"},
                    "nodes": [{"id": "inner", "type": "batch", "inputs": {"numbers": "{{ inputs.numbers }}"},
                               "config": {"items": "{{ inputs.numbers }}", "outputs": {"t": "{{ t.text }}"},
                                          "nodes": [{"id": "t", "type": "template",
                                                     "config": {"template": "{{ item }}"}}]}}]}},
        {"id": "ask", "type": "question", "after": ["each"],
         "config": {"question": "Keep?", "answer_type": "option", "options": ["yes", "no"]}},
    ],
    "outputs": {"t": "{{ each.t }}", "answer": "{{ ask.answer }}"},
}
HELLO = {"nodes": [{"id": "hi", "type": "template", "config": {"template": "hi"}}], "outputs": {"text": "{{ hi.text }}"}}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def connect(settings: Settings) -> psycopg.Connection[Any]:
    return psycopg.connect((settings.database_url or "").replace("postgresql+psycopg://", "postgresql://"),
                           autocommit=True)


def tree_of(conn: psycopg.Connection[Any], run_id: str) -> list[str]:
    """The run and its descendants at every depth."""
    return [str(row[0]) for row in conn.execute(
        "WITH RECURSIVE tree AS (SELECT id FROM runs WHERE id = %s "
        "UNION ALL SELECT c.id FROM runs c JOIN tree ON c.parent_run_id = tree.id) SELECT id FROM tree", (run_id,))]


def rows_of(conn: psycopg.Connection[Any], run_ids: list[str]) -> dict[str, int]:
    """Rows of these runs in each table."""
    counts = {}
    for table, column in (("runs", "id"), ("node_runs", "run_id"), ("run_events", "run_id"),
                          ("run_interrupts", "run_id")):
        counts[table] = conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = ANY(%s::uuid[])",
                                     (run_ids,)).fetchone()[0]  # type: ignore[index]
    return counts


def age(conn: psycopg.Connection[Any], run_id: str, days: float, finished: bool = True) -> None:
    """Test setup: move the run's start (and end) `days` into the past."""
    conn.execute("UPDATE runs SET created_at = now() - make_interval(secs => %s), "
                 "finished_at = CASE WHEN %s THEN now() - make_interval(secs => %s) ELSE finished_at END "
                 "WHERE id = %s", (days * 86400, finished, days * 86400, run_id))


def finished_tree(api: ApiHelper) -> str:
    """A run of TREE driven to its end (the question answered)."""
    run_id = api.submit(api.create_workflow(TREE, name="tree"))
    run = api.wait(run_id, statuses=("interrupted",))
    reply = api.client.post(f"/v1/runs/{run_id}/resume", json={"event_id": run["interrupt"]["event_id"], "data": "yes"})
    assert reply.status_code == 202, reply.get_json()
    assert api.wait(run_id)["status"] == "succeeded"
    return run_id


def retention(settings: Settings, **changes: Any) -> Retention:
    return Retention(get_engine(settings), settings.model_copy(update={"retention_pause_s": 0, **changes}))


def test_an_expired_run_goes_with_its_children_nodes_events_and_interrupts_and_others_stay(
        api: ApiHelper, inline_worker: Any, settings: Settings) -> None:
    # Given an ended run with nested child runs and an answered question, ended 31 days ago
    old = finished_tree(api)
    young = finished_tree(api)
    hello = api.create_workflow(HELLO, name="hello")
    live = api.submit(hello)  # queued: never driven
    with connect(settings) as conn:
        old_tree = tree_of(conn, old)
        before = rows_of(conn, old_tree)
        assert len(old_tree) == 1 + 2 + 4 and before["run_interrupts"] == 1 and before["run_events"] > 10
        age(conn, old, 31)
        age(conn, young, 1)
        # and a live run started 40 days ago (its end time forced into the past too: only its status counts)
        conn.execute("UPDATE runs SET created_at = now() - interval '40 days', "
                     "finished_at = now() - interval '40 days' WHERE id = %s", (live,))
        young_rows = rows_of(conn, tree_of(conn, young))
        # When a sweep runs with the default retention (30 days)
        report = retention(settings).sweep()
        # Then the old run's whole tree is gone, every row of it
        assert report.leader and report.deleted.roots == 1 and report.deleted.runs == 7
        assert rows_of(conn, old_tree) == {"runs": 0, "node_runs": 0, "run_events": 0, "run_interrupts": 0}
        assert report.deleted.events == before["run_events"] and report.deleted.nodes == before["node_runs"]
        # and the young run and the live run are untouched
        assert rows_of(conn, tree_of(conn, young)) == young_rows
        assert rows_of(conn, [live])["runs"] == 1
    assert api.client.get(f"/v1/runs/{old}").status_code == 404
    assert api.run(young)["status"] == "succeeded"
    # and the live run still runs to its end
    assert api.wait(live)["status"] == "succeeded"


def test_a_space_keeps_forever_with_0_and_a_shorter_own_retention_deletes_earlier(
        app: Any, api: ApiHelper, inline_worker: Any, settings: Settings) -> None:
    # Given runs that ended 10 days ago in the default space and in a space kept forever
    store = Store.from_engine(get_engine(settings))
    keep = app.test_client()
    keep.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + issue_token(store, "keep", "k", create_space=True).token
    keep_api = ApiHelper(keep)
    keep_api.drive = inline_worker.drain
    in_default = api.wait(api.submit(api.create_workflow(HELLO)))["run_id"]
    in_keep = keep_api.wait(keep_api.submit(keep_api.create_workflow(HELLO)))["run_id"]
    spaces = RetentionStore(get_engine(settings))
    assert spaces.set_space_retention("keep", 0)
    with connect(settings) as conn:
        age(conn, in_default, 10)
        age(conn, in_keep, 400)
        # When a sweep runs with the default 30 days, nothing is old enough (and "keep" is forever)
        assert retention(settings).sweep().deleted.roots == 0
        # When the default space's own retention is 7 days, its run goes; the other still stays
        assert spaces.set_space_retention(DEFAULT_SPACE, 7)
        assert spaces.space_retentions() == {DEFAULT_SPACE: 7.0, "keep": 0.0}
        assert retention(settings).sweep().deleted.roots == 1
        assert rows_of(conn, [in_default])["runs"] == 0
        assert rows_of(conn, [in_keep])["runs"] == 1
        # and with a deployment default of 0 (forever), a space's own retention still applies
        assert spaces.set_space_retention("keep", None)
        assert retention(settings, retention_days=0).sweep().deleted.roots == 0
        assert rows_of(conn, [in_keep])["runs"] == 1
    assert not spaces.set_space_retention("nowhere", 1)


def test_a_sweep_deletes_in_batches_of_the_batch_size(api: ApiHelper, inline_worker: Any, settings: Settings,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    # Given five expired runs
    workflow_id = api.create_workflow(HELLO)
    runs = [api.submit(workflow_id) for _ in range(5)]
    inline_worker.drain()
    with connect(settings) as conn:
        for run_id in runs:
            age(conn, run_id, 60)
    # When a sweep runs with batches of 2
    with caplog.at_level(logging.INFO, logger="relayflow.retention"):
        report = retention(settings, retention_batch=2).sweep()
    # Then it took three batches of 2, 2 and 1 runs, one log line each
    assert (report.batches, report.deleted.roots) == (3, 5)
    lines = [r for r in caplog.records if getattr(r, "event", None) == "retention.deleted"]
    assert [r.roots for r in lines] == [2, 2, 1]  # type: ignore[attr-defined]


def test_two_sweeps_at_once_delete_everything_once_without_error(api: ApiHelper, inline_worker: Any,
                                                                 settings: Settings) -> None:
    # Given 30 expired runs
    workflow_id = api.create_workflow(HELLO)
    runs = [api.submit(workflow_id) for _ in range(30)]
    inline_worker.drain()
    with connect(settings) as conn:
        conn.execute("UPDATE runs SET finished_at = now() - interval '90 days' WHERE id = ANY(%s::uuid[])", (runs,))
    # When two sweepers (two processes' objects, their own pools) sweep at the same moment, batch by batch
    sweepers = [retention(settings, retention_batch=3) for _ in range(2)]
    reports: list[Any] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def sweep(sweeper: Retention) -> None:
        start.wait()
        try:
            while (report := sweeper.sweep()).leader is False or report.deleted.roots:
                reports.append(report)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=sweep, args=(s,)) for s in sweepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Then neither failed, and together they deleted each run once
    assert errors == []
    assert sum(r.deleted.roots for r in reports) == 30
    with connect(settings) as conn:
        assert rows_of(conn, runs)["runs"] == 0


def test_the_workers_sweep_by_themselves(api: ApiHelper, settings: Settings, start_worker: Any) -> None:
    # Given a worker process that sweeps every half second, and a run that ended 31 days ago
    start_worker(env={"RELAYFLOW_RETENTION_EVERY_S": "0.5"})
    old = api.wait(api.submit(api.create_workflow(HELLO)))["run_id"]
    young = api.wait(api.submit(api.create_workflow(HELLO, name="young")))["run_id"]
    with connect(settings) as conn:
        age(conn, old, 31)
        # Then it disappears by itself, and the young one stays
        wait_for(lambda: rows_of(conn, [old])["runs"] == 0, timeout_s=30)
        assert rows_of(conn, [young])["runs"] == 1


def test_the_operator_sets_a_retention_counts_and_sweeps_from_the_command_line(
        api: ApiHelper, inline_worker: Any, settings: Settings) -> None:
    # Given an ended run 3 days old, in the default space
    run_id = api.wait(api.submit(api.create_workflow(HELLO)))["run_id"]
    env = {**settings_env(settings), "COLUMNS": "200"}
    with connect(settings) as conn:
        age(conn, run_id, 3)
        # When the operator gives the space a 2-day retention
        done = cli(env, "spaces", "set-retention", DEFAULT_SPACE, "2")
        assert done.returncode == 0, done.stderr
        # Then the listing shows it, and a dry run counts the run without deleting it
        listed = cli(env, "spaces", "list").stdout
        assert "2 days (own)" in listed
        dry = cli(env, "retention", "run", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert re.search(r"runs \(top-level\)\s+1\b", dry.stdout), dry.stdout
        assert rows_of(conn, [run_id])["runs"] == 1
        # and a sweep now deletes it
        swept = cli(env, "retention", "run")
        assert swept.returncode == 0 and re.search(r"runs \(top-level\)\s+1\b", swept.stdout), swept.stdout
        assert rows_of(conn, [run_id])["runs"] == 0
    # and a retention that is not a number of days is refused, naming it
    bad = cli(env, "spaces", "set-retention", DEFAULT_SPACE, "a-week")
    assert bad.returncode == 2 and "'a-week' is not a retention" in bad.stderr
    assert "forever" in cli(env, "spaces", "set-retention", DEFAULT_SPACE, "0").stdout


def test_a_tree_with_a_live_run_waits_and_a_held_lock_stops_the_sweep(api: ApiHelper, inline_worker: Any,
                                                                       settings: Settings) -> None:
    # Given two expired runs with child runs; one has a child still running (an orphan not yet cancelled)
    kept, gone = finished_tree(api), finished_tree(api)
    with connect(settings) as conn:
        orphan = tree_of(conn, kept)[-1]
        conn.execute("UPDATE runs SET status = 'running', finished_at = NULL WHERE id = %s", (orphan,))
        for run_id in (kept, gone):
            age(conn, run_id, 31)
        # When another process holds the sweep's lock, a sweep gives way and deletes nothing
        with connect(settings) as holder, holder.transaction():
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (RETENTION_LOCK_KEY,))
            assert retention(settings).sweep().leader is False
        assert rows_of(conn, [kept, gone])["runs"] == 2
        # When the lock is free, the tree whose runs all ended goes; the one with a live child stays whole
        report = retention(settings).sweep()
        assert report.deleted.roots == 1 and rows_of(conn, [gone])["runs"] == 0
        assert len(tree_of(conn, kept)) == 7
