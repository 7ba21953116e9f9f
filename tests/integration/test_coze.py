"""Coze Studio compatibility: Coze's own Python SDK (cozepy), unchanged, drives Relayflow.

Where the SDK targets coze.com rather than Coze Studio (Studio's `get_run_history` path, its
`parameters` as a JSON string), the test speaks the documented shapes with plain HTTP.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cozepy import COZE_COM_BASE_URL, Coze, CozeAPIError, SyncHTTPClient, TokenAuth, WorkflowEventType

from tests.conftest import ApiHelper, wait_for

pytestmark = pytest.mark.integration

TRIAGE = {"inputs": {"ticket": {"type": "string", "required": True}, "priority": {"type": "integer", "default": 1}},
          "nodes": [{"id": "clean", "type": "template", "config": {"template": "{{ inputs.ticket | trim | upper }}"}}],
          "outputs": {"text": "{{ clean.text }}", "priority": "{{ inputs.priority }}"}}

APPROVAL = {"nodes": [
    {"id": "ask", "type": "question", "title": "Approve the refund",
     "config": {"question": "Refund?", "answer_type": "option", "options": ["yes", "no"]}},
    {"id": "form", "type": "input", "after": ["ask"],
     "config": {"schema": {"type": "object", "required": ["reason"], "properties": {"reason": {"type": "string"}}}}},
], "outputs": {"answer": "{{ ask.answer }}", "reason": "{{ form.reason }}"}}


def _published(api: ApiHelper, definition: dict[str, Any]) -> str:
    workflow_id = api.create_workflow(definition)
    assert api.client.post(f"/v1/workflows/{workflow_id}/publish", json={}).status_code == 200
    return workflow_id


@pytest.fixture
def coze(web_server: str, token: str) -> Iterator[Coze]:
    """Coze's SDK pointed at our web server (never at coze.com)."""
    assert web_server != COZE_COM_BASE_URL
    with SyncHTTPClient() as http:
        yield Coze(auth=TokenAuth(token), base_url=web_server, http_client=http)


def test_the_coze_sdk_runs_a_published_workflow_synchronously(coze: Coze, api: ApiHelper, start_worker: Any) -> None:
    start_worker()
    workflow_id = _published(api, TRIAGE)
    result = coze.workflows.runs.create(workflow_id=workflow_id, parameters={"ticket": "  printer on fire "})
    assert json.loads(result.data) == {"text": "PRINTER ON FIRE", "priority": 1}
    assert result.debug_url.endswith(f"/v1/runs/{result.execute_id}")


def test_an_unpublished_workflow_is_6031_and_bad_parameters_are_4000(coze: Coze, api: ApiHelper) -> None:
    draft = api.create_workflow(TRIAGE)
    with pytest.raises(CozeAPIError) as unpublished:
        coze.workflows.runs.create(workflow_id=draft, parameters={"ticket": "x"})
    assert unpublished.value.code == 6031
    published = _published(api, TRIAGE)
    with pytest.raises(CozeAPIError) as missing:
        coze.workflows.runs.create(workflow_id=published, parameters={"priority": 2})
    assert missing.value.code == 4000 and "ticket" in (missing.value.msg or "")


def test_parameters_as_a_json_string_and_async_runs_polled_through_run_history(
        web_server: str, token: str, api: ApiHelper, start_worker: Any) -> None:
    start_worker()
    workflow_id = _published(api, TRIAGE)
    with httpx.Client(base_url=web_server, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        # Coze Studio's documented body: parameters is a JSON string
        bad = http.post("/v1/workflow/run", json={"workflow_id": workflow_id, "parameters": "{not json"}).json()
        assert bad["code"] == 4000 and "parameters" in bad["msg"]
        started = http.post("/v1/workflow/run", json={
            "workflow_id": workflow_id, "parameters": json.dumps({"ticket": "async one", "priority": 3}),
            "is_async": True, "ext": {"user_id": "u-1"}, "bot_id": "ignored"}).json()
        assert started["code"] == 0 and started["execute_id"] and started["debug_url"]

        def history() -> dict[str, Any]:
            body = http.get("/v1/workflow/get_run_history",
                            params={"workflow_id": workflow_id, "execute_id": started["execute_id"]}).json()
            assert body["code"] == 0 and len(body["data"]) == 1
            return body["data"][0]

        record = wait_for(lambda: (h := history())["execute_status"] == "Success" and h)
    assert json.loads(record["output"]) == {"text": "ASYNC ONE", "priority": 3}
    assert record["run_mode"] == 2 and record["error_code"] == "" and record["token"] == 0
    assert record["create_time"] <= record["update_time"] <= time.time() + 1
    assert json.loads(record["input"]) == {"ticket": "async one", "priority": 3}


def test_the_coze_sdk_reads_the_run_history(coze: Coze, api: ApiHelper, start_worker: Any) -> None:
    start_worker()
    workflow_id = _published(api, TRIAGE)
    started = coze.workflows.runs.create(workflow_id=workflow_id, parameters={"ticket": "later"}, is_async=True)
    record = wait_for(lambda: (h := coze.workflows.runs.run_histories.retrieve(
        workflow_id=workflow_id, execute_id=started.execute_id)).execute_status.value == "Success" and h)
    assert json.loads(record.output) == {"text": "LATER", "priority": 1}
    assert record.run_mode == 2


def test_streaming_with_a_question_and_a_form_resumed_through_the_coze_sdk(coze: Coze, api: ApiHelper,
                                                                            start_worker: Any) -> None:
    start_worker()
    workflow_id = _published(api, APPROVAL)
    # The stream stops at the first interrupt: a question (Coze type 2) with its options
    events = list(coze.workflows.runs.stream(workflow_id=workflow_id, parameters={}))
    assert [e.event for e in events] == [WorkflowEventType.INTERRUPT]
    question = events[0].interrupt
    assert question is not None and question.interrupt_data.type == 2
    assert question.node_title == "Approve the refund"
    # Answering it streams on to the form (type 5)
    events = list(coze.workflows.runs.resume(workflow_id=workflow_id, event_id=question.interrupt_data.event_id,
                                             resume_data="yes", interrupt_type=2))
    assert [e.event for e in events] == [WorkflowEventType.INTERRUPT]
    form = events[0].interrupt
    assert form is not None and form.interrupt_data.type == 5
    # Answering the form ends the run: one Message with the outputs (the SDK swallows the Done that follows)
    events = list(coze.workflows.runs.resume(workflow_id=workflow_id, event_id=form.interrupt_data.event_id,
                                             resume_data=json.dumps({"reason": "damaged"}), interrupt_type=5))
    assert [e.event for e in events] == [WorkflowEventType.MESSAGE]
    assert events[0].message is not None and events[0].message.node_is_finish
    assert json.loads(events[0].message.content) == {"answer": "yes", "reason": "damaged"}
    # The same event cannot be answered twice
    with pytest.raises(CozeAPIError) as again:
        list(coze.workflows.runs.resume(workflow_id=workflow_id, event_id=form.interrupt_data.event_id,
                                        resume_data="{}", interrupt_type=5))
    assert again.value.code != 0


def test_a_sync_run_that_reaches_a_question_is_6039(coze: Coze, api: ApiHelper, start_worker: Any) -> None:
    start_worker()
    workflow_id = _published(api, APPROVAL)
    with pytest.raises(CozeAPIError) as interrupted:
        coze.workflows.runs.create(workflow_id=workflow_id, parameters={})
    assert interrupted.value.code == 6039


def test_a_failing_run_streams_an_error_event_naming_the_node(coze: Coze, api: ApiHelper, start_worker: Any) -> None:
    start_worker()
    workflow_id = _published(api, {"nodes": [{"id": "boom", "type": "code", "config": {
        "code": "def main(inputs):\n    raise ValueError('no luck')\n"}}], "outputs": {}})
    events = list(coze.workflows.runs.stream(workflow_id=workflow_id, parameters={}))
    assert [e.event for e in events] == [WorkflowEventType.ERROR]
    assert events[0].error is not None and events[0].error.error_code != 0
    assert "boom" in events[0].error.error_message and "no luck" in events[0].error.error_message


def test_stream_run_frames_are_numbered_from_zero_and_end_with_done(web_server: str, token: str, api: ApiHelper,
                                                                     start_worker: Any) -> None:
    start_worker()
    workflow_id = _published(api, TRIAGE)
    with httpx.stream("POST", f"{web_server}/v1/workflow/stream_run", headers={"Authorization": f"Bearer {token}"},
                      json={"workflow_id": workflow_id, "parameters": json.dumps({"ticket": "hi"})}, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    frames = [dict(line.split(": ", 1) for line in block.splitlines()) for block in text.strip().split("\n\n")]
    assert [(f["id"], f["event"]) for f in frames] == [("0", "Message"), ("1", "Done")]
    message = json.loads(frames[0]["data"])
    assert json.loads(message["content"]) == {"text": "HI", "priority": 1}
    assert message["node_type"] == "End" and message["node_is_finish"] is True
    assert json.loads(frames[1]["data"])["debug_url"]
