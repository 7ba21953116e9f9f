"""A submit is one statement that trusts what this process last saw as a workflow's latest version
(engine/versions.py `resolve`) and checks it in the insert itself (INSERT_RUN's `latest`): a
version stored meanwhile by another process is never missed, and idempotency still holds."""
from __future__ import annotations

import uuid

import pytest

from engine.db import get_engine
from engine.errors import InvalidInputs
from engine.service import Relayflow
from engine.settings import Settings
from engine.store import Store
from engine.testing import MemoryDispatcher
from engine.tokens import DEFAULT_SPACE

pytestmark = pytest.mark.integration


def _v(required: str) -> dict[str, object]:
    return {"inputs": {required: {"type": "string", "required": True}},
            "nodes": [{"id": "a", "type": "template", "config": {"template": "{{ inputs." + required + " }}"}}],
            "outputs": {"a": "{{ a.text }}"}}


def _process(settings: Settings) -> Relayflow:
    """A web process's service: its own version cache (one store, as processes share the database)."""
    store = Store.from_engine(get_engine(settings))
    store.catalog.ensure_space(DEFAULT_SPACE, "Default space")
    return Relayflow(store, MemoryDispatcher(), settings)


def test_a_version_stored_by_another_process_is_the_one_the_next_submit_runs(settings: Settings) -> None:
    # Given process A that has submitted runs of version 1 (and cached it as the latest)
    first, second = _process(settings), _process(settings)
    workflow_id = first.create_workflow(DEFAULT_SPACE, "moving", None, _v("ticket"))["workflow_id"]
    assert first.submit_run(DEFAULT_SPACE, workflow_id, {"ticket": "x"})["created"]
    # When process B stores version 2, which needs another input
    second.update_workflow(DEFAULT_SPACE, workflow_id, _v("order"))
    # Then A's next submit is validated against version 2 and runs it
    with pytest.raises(InvalidInputs):
        first.submit_run(DEFAULT_SPACE, workflow_id, {"ticket": "x"})
    started = first.submit_run(DEFAULT_SPACE, workflow_id, {"order": "o-1"})
    run = first.get_run(DEFAULT_SPACE, started["run_id"])
    assert run["version"] == 2 and run["inputs"] == {"order": "o-1"}


def test_a_repeated_idempotency_key_answers_the_first_run_in_one_statement(settings: Settings) -> None:
    # Given a run submitted with a key
    service = _process(settings)
    workflow_id = service.create_workflow(DEFAULT_SPACE, "keyed", None, _v("ticket"))["workflow_id"]
    first = service.submit_run(DEFAULT_SPACE, workflow_id, {"ticket": "x"}, idempotency_key="k-1")
    # When the same key is submitted again (by this process or another)
    again = _process(settings).submit_run(DEFAULT_SPACE, workflow_id, {"ticket": "x"}, idempotency_key="k-1")
    # Then the first run answers, not created again, and only one run exists
    assert first["created"] and not again["created"] and again["run_id"] == first["run_id"]
    listed = service.list_runs(DEFAULT_SPACE, workflow_id)["runs"]
    assert [r["run_id"] for r in listed] == [first["run_id"]]
    assert uuid.UUID(first["run_id"])
