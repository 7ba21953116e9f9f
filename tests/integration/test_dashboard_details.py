"""The dashboard's run details over Flask's test client: the bounded search over run inputs, a
composite node's child runs page by page, the diagnosis folded while a run moves, the attempt
timeline's timing in attempt_log. In a browser: tests/browser/test_dashboard_details.py."""
from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from engine.db import get_engine
from engine.settings import Settings
from engine.store import Store
from engine.tokens import issue_token
from tests.conftest import ApiHelper
from tests.integration.test_dashboard import _signed_in

pytestmark = pytest.mark.integration

ECHO = {"inputs": {"name": {"type": "string", "required": True}},
        "nodes": [{"id": "hi", "type": "template", "config": {"template": "hi {{ inputs.name }}"}}]}
BATCH = {"inputs": {"items": {"type": "array", "required": True}},
         "nodes": [{"id": "each", "type": "batch",
                    "config": {"items": "{{ inputs.items }}", "concurrency": 5,
                               "nodes": [{"id": "echo", "type": "template", "config": {"template": "{{ item }}"}}],
                               "outputs": {"text": "{{ echo.text }}"}}}]}


def test_the_search_reads_a_bounded_window_per_page_and_goes_on_where_it_stopped(app: Any, api: ApiHelper,
                                                                                 inline_worker: Any) -> None:
    from api.runtime import runtime

    workflow_id = api.create_workflow(ECHO)
    names = ["needle 1", "hay", "hay", "Needle 2", "hay", "50% off", "hay", "needle 3"]
    run_ids = [api.submit(workflow_id, {"name": n}) for n in names]
    for run_id in run_ids:
        api.wait(run_id)
    with app.app_context():
        service = runtime().service
        space = runtime().store.views.run_with_nodes(uuid.UUID(run_ids[0]), None)[0]["space_id"]
        # Given a window of 3 runs per page, the search pages through all 8, newest first
        found, cursor, scanned = [], None, []
        while True:
            page = service.search_runs(space, "NEEDLE", cursor=cursor, limit=10, scan=3)
            found += [r["run_id"] for r in page["runs"]]
            scanned.append(page["scanned"])
            if not (cursor := page["next_cursor"]):
                break
        assert found == [run_ids[7], run_ids[3], run_ids[0]] and scanned == [3, 3, 2]
        # A full page stops before the window's end, and the next page takes up after its last run
        first = service.search_runs(space, "needle", limit=1, scan=100)
        assert [r["run_id"] for r in first["runs"]] == [run_ids[7]]
        second = service.search_runs(space, "needle", cursor=first["next_cursor"], limit=1, scan=100)
        assert [r["run_id"] for r in second["runs"]] == [run_ids[3]]
        # LIKE's wildcards are text: "%" finds the one run whose input has it
        assert [r["run_id"] for r in service.search_runs(space, "0%")["runs"]] == [run_ids[5]]
        assert service.search_runs(space, "_")["runs"] == []


def test_a_batch_nodes_child_runs_come_a_page_at_a_time_and_only_to_its_space(app: Any, api: ApiHelper, token: str,
                                                                              settings: Settings,
                                                                              inline_worker: Any) -> None:
    run_id = api.submit(api.create_workflow(BATCH), {"items": list(range(25))})
    assert api.wait(run_id, timeout_s=60)["status"] == "succeeded"
    browser = _signed_in(app, token)
    first = browser.get(f"/ui/runs/{run_id}/children?node=each").get_data(as_text=True)
    assert first.count('<tr class="row-succeeded">') == 20 and "More child runs" in first
    more = first.split('data-more="')[1].split('"')[0].replace("&amp;", "&")
    rest = browser.get(more).get_data(as_text=True)
    assert rest.count('<tr class="row-succeeded">') == 5 and "More child runs" not in rest
    # The run page, the node expanded without script: its first page is in the page
    page = browser.get(f"/ui/runs/{run_id}?node=each&expand=each").get_data(as_text=True)
    assert 'id="composite-each"' in page and "25/25 done" in page and page.count('<tr class="row-succeeded">') == 20
    # Another space sees none of them
    other = issue_token(Store.from_engine(get_engine(settings)), "other", "visitor", ("admin",), create_space=True).token
    assert "row-succeeded" not in _signed_in(app, other).get(f"/ui/runs/{run_id}/children?node=each").get_data(as_text=True)


def test_the_diagnosis_stays_folded_while_the_run_moves(app: Any, api: ApiHelper, token: str,
                                                       start_worker: Any) -> None:
    start_worker()
    slow = {"nodes": [{"id": "nap", "type": "sleep", "config": {"seconds": 20}},
                      {"id": "after", "type": "template", "after": ["nap"], "config": {"template": "done"}}]}
    run_id = api.submit(api.create_workflow(slow))
    deadline = time.monotonic() + 30
    while api.client.get(f"/v1/runs/{run_id}").get_json()["nodes"][0]["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    page = _signed_in(app, token).get(f"/ui/runs/{run_id}").get_data(as_text=True)
    assert 'id="diagnosis"' in page and 'id="diagnosis" open' not in page and "the run is moving" in page
    api.client.post(f"/v1/runs/{run_id}/cancel")


def test_each_attempt_logs_when_it_started_and_the_backoff_after_it(app: Any, api: ApiHelper,
                                                                    inline_worker: Any) -> None:
    flaky = {"nodes": [{"id": "fetch", "type": "http", "retry": {"max_attempts": 2, "backoff_s": 0.2, "jitter": False},
                        "config": {"url": "http://127.0.0.1:9/nothing-listens", "timeout_s": 1}}]}
    run = api.wait(api.submit(api.create_workflow(flaky)), timeout_s=60)
    log = api.node(run, "fetch")["attempt_errors"]
    assert [e["attempt"] for e in log] == [1, 2]
    assert all(e["started_at"] <= e["at"] for e in log)
    assert log[0]["backoff_s"] == 0.2 and "backoff_s" not in log[1]  # the last attempt is not retried
