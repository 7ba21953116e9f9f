"""A space's running-node count is kept only while it has a cap (migration 0016, issue 15).

The count (`spaces.running_nodes`) exists to enforce a cap; a space without one is neither locked
nor counted into by a claim, so its nodes do not queue on one row. A capped space's count stays
exact, and a node claimed while its space had no cap never moves the count when it ends.
"""
from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from engine.db import get_engine
from engine.dispatch import DramatiqDispatcher, make_broker
from engine.service import Relayflow
from engine.settings import Settings
from engine.store import Store
from engine.store.lifecycle import Claim
from engine.tokens import DEFAULT_SPACE

pytestmark = pytest.mark.integration

TWO_ROOTS = {"nodes": [{"id": "a", "type": "template", "config": {"template": "x"}},
                       {"id": "b", "type": "template", "config": {"template": "y"}}],
             "outputs": {"a": "{{ a.text }}", "b": "{{ b.text }}"}}
COMMIT = {"status": "succeeded", "error": None, "port": None, "signals": [],
          "event_type": "node.succeeded", "event_data": None}


def _running_nodes(settings: Settings) -> int:
    url = (settings.database_url or "").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT running_nodes FROM spaces WHERE id = %s", (DEFAULT_SPACE,)).fetchone()
    assert row is not None
    return int(row[0])


def _listed_running(store: Store) -> int:
    """Running nodes of the default space as `relayflow spaces list` shows them."""
    return next(load.running_nodes for load in store.catalog.space_loads() if load.id == DEFAULT_SPACE)


def _submit(settings: Settings) -> tuple[Store, uuid.UUID]:
    store = Store.from_engine(get_engine(settings))
    service = Relayflow(store, DramatiqDispatcher(make_broker(settings), settings.queue_name), settings)
    workflow = service.create_workflow(DEFAULT_SPACE, f"count-{uuid.uuid4().hex[:6]}", None, TWO_ROOTS)
    return store, uuid.UUID(service.submit_run(DEFAULT_SPACE, workflow["workflow_id"], {})["run_id"])


def _commit(store: Store, run_id: uuid.UUID, node: str, claim: Claim | None) -> Any:
    assert claim is not None
    return store.lifecycle.commit_node(run_id, node, claim, output={"text": node}, **COMMIT)


def test_uncapped_space_runs_nodes_without_counting_them(settings: Settings, token: str) -> None:
    store, run_id = _submit(settings)
    # When both nodes of a space without a cap run at once
    first = store.lifecycle.claim(run_id, "a", lease_s=30, grace_s=0, space_cap=0)
    second = store.lifecycle.claim(run_id, "b", lease_s=30, grace_s=0, space_cap=0)
    # Then both are claimed and the space's count is not touched, before or after they end,
    # while `relayflow spaces list` still shows both running
    assert first is not None and second is not None
    assert _running_nodes(settings) == 0
    assert _listed_running(store) == 2
    _commit(store, run_id, "a", first)
    assert _commit(store, run_id, "b", second).remaining == 0
    assert _running_nodes(settings) == 0


def test_capped_space_counts_exactly_and_an_uncounted_node_never_moves_the_count(
        settings: Settings, token: str) -> None:
    store, run_id = _submit(settings)
    # Given node a claimed while the space had no cap, then a cap of 1
    uncounted = store.lifecycle.claim(run_id, "a", lease_s=30, grace_s=0, space_cap=0)
    assert uncounted is not None
    # When node b is claimed under the cap: it is counted, and the cap is then full
    counted = store.lifecycle.claim(run_id, "b", lease_s=30, grace_s=0, space_cap=1)
    assert counted is not None and _running_nodes(settings) == 1 and _listed_running(store) == 2
    # Then the uncounted node's end leaves the count as it is, and the counted one's frees it
    _commit(store, run_id, "a", uncounted)
    assert _running_nodes(settings) == 1
    assert _listed_running(store) == 1
    _commit(store, run_id, "b", counted)
    assert _running_nodes(settings) == 0 and _listed_running(store) == 0
