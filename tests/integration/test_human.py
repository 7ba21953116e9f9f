"""Human-in-the-loop: question and input nodes interrupt the run, a resume continues it exactly once.

The in-process worker runs these (what is queued runs when a test waits); that a parked run
holds no worker thread is shown with a real worker process.
"""
from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.conftest import ApiHelper, wait_for

pytestmark = pytest.mark.integration

APPROVAL = {
    "inputs": {"amount": {"type": "integer", "required": True}},
    "nodes": [
        {"id": "ask", "type": "question",
         "config": {"question": "Approve a refund of {{ inputs.amount }} EUR?", "answer_type": "option",
                    "options": ["yes", "no"]}},
        {"id": "form", "type": "input", "after": ["ask"],
         "config": {"prompt": "Details for the {{ ask.answer }} answer",
                    "schema": {"type": "object", "required": ["reason", "score"],
                               "properties": {"reason": {"type": "string", "minLength": 3},
                                              "score": {"type": "integer", "minimum": 1, "maximum": 5}}}}},
        {"id": "done", "type": "template",
         "config": {"template": "{{ ask.answer }}/{{ form.reason }}/{{ form.score }}"}},
    ],
    "outputs": {"summary": "{{ done.text }}", "choice": "{{ ask.option_index }}"},
}


def _interrupted(api: ApiHelper, run_id: str, node_id: str) -> dict[str, Any]:
    if api.drive is not None:
        api.drive()
    return api.wait(run_id, statuses=("interrupted",)) if node_id is None else wait_for(
        lambda: (r := api.run(run_id))["status"] == "interrupted" and r["interrupt"]
        and r["interrupt"]["node_id"] == node_id and r)


def test_question_then_form_pause_the_run_and_resumes_continue_it(api: ApiHelper, inline_worker: Any) -> None:
    # Given a workflow that asks a question, then a form
    run_id = api.submit(api.create_workflow(APPROVAL), {"amount": 42})
    # When the run reaches the question
    run = _interrupted(api, run_id, "ask")
    # Then it waits with the rendered question and holds the node as interrupted
    assert run["interrupt"]["type"] == "question"
    assert run["interrupt"]["data"]["question"] == "Approve a refund of 42 EUR?"
    assert api.node(run, "ask")["status"] == "interrupted"
    # When the answer is given
    reply = api.client.post(f"/v1/runs/{run_id}/resume",
                            json={"event_id": run["interrupt"]["event_id"], "data": "yes"})
    assert reply.status_code == 202, reply.get_json()
    # Then the form is asked next, with its own event
    run = _interrupted(api, run_id, "form")
    assert run["interrupt"]["data"]["prompt"] == "Details for the yes answer"
    form_event = run["interrupt"]["event_id"]
    # Invalid form data is refused naming the fields, and the run keeps waiting
    bad = api.client.post(f"/v1/runs/{run_id}/resume", json={"event_id": form_event, "data": {"reason": "ok", "score": 9}})
    assert bad.status_code == 422
    fields = {e["field"] for e in bad.get_json()["errors"]}
    assert fields == {"data.reason", "data.score"}
    assert api.run(run_id)["status"] == "interrupted"
    missing = api.client.post(f"/v1/runs/{run_id}/resume", json={"event_id": form_event, "data": {"reason": "fine"}})
    assert missing.status_code == 422 and missing.get_json()["errors"][0]["field"] == "data.score"
    # A valid form finishes the run with both answers
    ok = api.client.post(f"/v1/runs/{run_id}/resume", json={"event_id": form_event, "data": {"reason": "broken", "score": 4}})
    assert ok.status_code == 202
    final = api.wait(run_id)
    assert final["status"] == "succeeded", final
    assert final["outputs"] == {"summary": "yes/broken/4", "choice": 0}
    assert api.node(final, "ask")["attempts"] == 1  # the resume finished the same attempt


def test_a_second_resume_of_the_same_event_and_a_wrong_event_are_409(api: ApiHelper, inline_worker: Any) -> None:
    run_id = api.submit(api.create_workflow(APPROVAL), {"amount": 1})
    event_id = _interrupted(api, run_id, "ask")["interrupt"]["event_id"]
    wrong = api.client.post(f"/v1/runs/{run_id}/resume", json={"event_id": "nope", "data": "yes"})
    assert wrong.status_code == 409 and event_id in wrong.get_json()["msg"]
    not_an_option = api.client.post(f"/v1/runs/{run_id}/resume", json={"event_id": event_id, "data": "maybe"})
    assert not_an_option.status_code == 422 and "yes, no" in not_an_option.get_json()["msg"]
    answer = {"event_id": event_id, "data": {"option_index": 1}}
    assert api.client.post(f"/v1/runs/{run_id}/resume", json=answer).status_code == 202
    again = api.client.post(f"/v1/runs/{run_id}/resume", json={"event_id": event_id, "data": "yes"})
    assert again.status_code == 409
    run = _interrupted(api, run_id, "form")
    assert api.node(run, "ask")["output"] == {"answer": "no", "option_index": 1}


def test_two_concurrent_resumes_of_one_event_continue_the_run_once(app: Any, api: ApiHelper, token: str,
                                                                    inline_worker: Any) -> None:
    # Given a run waiting on its question
    run_id = api.submit(api.create_workflow(APPROVAL), {"amount": 7})
    event_id = _interrupted(api, run_id, "ask")["interrupt"]["event_id"]
    # When two clients answer it at the same moment
    barrier = threading.Barrier(2)
    codes: list[int] = []

    def answer(text: str) -> None:
        client = app.test_client()
        barrier.wait()
        codes.append(client.post(f"/v1/runs/{run_id}/resume", json={"event_id": event_id, "data": text},
                                 headers={"Authorization": f"Bearer {token}"}).status_code)

    threads = [threading.Thread(target=answer, args=(t,)) for t in ("yes", "no")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then exactly one wins and the other is told it was answered already
    assert sorted(codes) == [202, 409]
    run = _interrupted(api, run_id, "form")
    events = [e for e in _events(api, run_id) if e["type"] == "run.resumed"]
    assert len(events) == 1
    assert api.node(run, "ask")["status"] == "succeeded"


def test_parallel_questions_are_answered_one_by_one_in_order(api: ApiHelper, inline_worker: Any) -> None:
    both = {"nodes": [
        {"id": "q1", "type": "question", "config": {"question": "first?"}},
        {"id": "q2", "type": "question", "config": {"question": "second?"}},
        {"id": "join", "type": "template", "config": {"template": "{{ q1.answer }}+{{ q2.answer }}"}},
    ], "outputs": {"text": "{{ join.text }}"}}
    run_id = api.submit(api.create_workflow(both))
    inline_worker.drain()
    wait_for(lambda: all(api.node(api.run(run_id), q)["status"] == "interrupted" for q in ("q1", "q2")))
    first = api.run(run_id)["interrupt"]
    # the run shows its oldest interrupt; answering the other one first is refused
    other = next(e["data"]["event_id"] for e in _events(api, run_id)
                 if e["type"] == "node.interrupted" and e["data"]["event_id"] != first["event_id"])
    assert api.client.post(f"/v1/runs/{run_id}/resume", json={"event_id": other, "data": "x"}).status_code == 409
    assert api.client.post(f"/v1/runs/{run_id}/resume", json={"event_id": first["event_id"], "data": "a"}).status_code == 202
    second = api.run(run_id)
    assert second["status"] == "interrupted" and second["interrupt"]["event_id"] == other
    assert api.client.post(f"/v1/runs/{run_id}/resume", json={"event_id": other, "data": "b"}).status_code == 202
    final = api.wait(run_id)
    answers = {first["node_id"]: "a", second["interrupt"]["node_id"]: "b"}
    assert final["outputs"]["text"] == f"{answers['q1']}+{answers['q2']}"


def test_an_interrupted_run_can_be_cancelled_and_then_not_resumed(api: ApiHelper, inline_worker: Any) -> None:
    run_id = api.submit(api.create_workflow(APPROVAL), {"amount": 3})
    event_id = _interrupted(api, run_id, "ask")["interrupt"]["event_id"]
    assert api.client.post(f"/v1/runs/{run_id}/cancel").status_code == 202
    run = api.run(run_id)
    assert run["status"] == "cancelled" and run["interrupt"] is None
    assert api.node(run, "ask")["status"] == "cancelled"
    assert api.client.post(f"/v1/runs/{run_id}/resume", json={"event_id": event_id, "data": "yes"}).status_code == 409


def test_an_interrupted_run_holds_no_worker(api: ApiHelper, start_worker: Any) -> None:
    # Given one worker with a single thread and a run parked on a question
    start_worker(threads=1)
    parked = api.submit(api.create_workflow(APPROVAL), {"amount": 5})
    _interrupted(api, parked, "ask")
    # Then another run still gets the only thread
    quick = api.create_workflow({"nodes": [{"id": "t", "type": "template", "config": {"template": "hi"}}],
                                 "outputs": {"text": "{{ t.text }}"}})
    assert api.wait(api.submit(quick))["outputs"] == {"text": "hi"}


def test_bad_question_and_form_definitions_are_refused_naming_node_and_field(api: ApiHelper) -> None:
    bad = {"nodes": [
        {"id": "q", "type": "question", "config": {"question": "pick", "answer_type": "option"}},
        {"id": "f", "type": "input", "config": {"schema": {"type": "string"}}},
        {"id": "g", "type": "input", "config": {"schema": {"type": "object", "properties": {"a": {"type": "nope"}}}}},
    ]}
    response = api.client.post("/v1/workflows", json={"name": "bad", "definition": bad})
    assert response.status_code == 422
    where = {(e["node_id"], e["field"]) for e in response.get_json()["errors"]}
    assert ("q", "config") in where or any(n == "q" for n, _ in where)
    assert ("f", "config.schema") in where and ("g", "config.schema") in where


def _events(api: ApiHelper, run_id: str) -> list[dict[str, Any]]:
    response = api.client.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "0"}, buffered=False)
    body = b""
    for chunk in response.response:
        body += chunk
        if b"keep-alive" in chunk:
            break
    response.close()
    import json

    return [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")]


def test_the_shipped_refund_approval_example_runs_with_two_answers(api: ApiHelper, inline_worker: Any) -> None:
    import yaml

    from tests.conftest import ROOT

    doc = yaml.safe_load((ROOT / "examples" / "human" / "refund-approval.yaml").read_text())
    inputs = doc.pop("demo_inputs")
    run_id = api.submit(api.create_workflow(doc), inputs)
    asked = _interrupted(api, run_id, "approve")["interrupt"]
    assert asked["data"]["question"] == "Refund 42 EUR to Ada?"
    assert api.client.post(f"/v1/runs/{run_id}/resume", json={"event_id": asked["event_id"], "data": "yes"}).status_code == 202
    form = _interrupted(api, run_id, "details")["interrupt"]
    assert api.client.post(f"/v1/runs/{run_id}/resume",
                           json={"event_id": form["event_id"], "data": {"reason": "parcel lost"}}).status_code == 202
    assert api.wait(run_id)["outputs"] == {"summary": "Ada: refund yes (parcel lost)", "approved": True}
