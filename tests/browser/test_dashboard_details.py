"""The dashboard's details in a real browser (headless Chromium, Selenium): searching runs by their
inputs, a composite node's child runs, the timeline of attempts, the node inspector's re-rendered
prompt and answer, the diagnosis when a run is not moving, moving a prompt's label.

Screenshots as in test_dashboard.py (RELAYFLOW_SCREENSHOTS_DIR=docs/img for the documentation).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from api.localstack.fake_llm import FakeLLM
from engine.settings import Settings
from tests.browser.conftest import NEEDS_CHROMIUM, Dashboard, start_dashboard
from tests.browser.test_dashboard import REFUND
from tests.conftest import wait_for
from tests.integration.llm_fixtures import fake_llm, model_dir, write_model  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.integration, NEEDS_CHROMIUM]

GREETING = {"name": "greeting", "nodes": [{"id": "hello", "type": "template",
                                           "config": {"template": "Hello, {{ inputs.name }}!"}}],
            "inputs": {"name": {"type": "string", "required": True}}, "outputs": {"text": "{{ hello.text }}"}}
HAIKU = {"name": "haiku-batch",
         "inputs": {"topic": {"type": "string", "required": True}, "items": {"type": "array", "required": True}},
         "nodes": [{"id": "ask", "type": "llm", "inputs": {"topic": "{{ inputs.topic }}"},
                    "retry": {"max_attempts": 3, "backoff_s": 0.4, "jitter": False},
                    "config": {"model": "flaky", "system_prompt": "Answer in {{ inputs.topic|length }} words.",
                               "prompt": {"key": "haiku", "label": "production"}, "stream": False}},
                   {"id": "each", "type": "batch", "after": ["ask"],
                    "config": {"items": "{{ inputs.items }}", "concurrency": 5,
                               "nodes": [{"id": "echo", "type": "template", "config": {"template": "{{ item }}"}}],
                               "outputs": {"text": "{{ echo.text }}"}}}],
         "outputs": {"answer": "{{ ask.text }}", "texts": "{{ each.text }}"}}


@pytest.fixture
def llm_dashboard(settings: Settings, start_web: Callable[..., Any], start_worker: Callable[..., Any], browser: Any,
                  screenshots: Path, write_model: Callable[..., Path], fake_llm: FakeLLM) -> Dashboard:  # noqa: F811
    """The stack with model `flaky`: its first 3 calls answer 500: the node's first attempt (the router tries 3 times) fails."""
    write_model("flaky", "fail_first=3:500", pricing={"input_per_million": "1", "output_per_million": "2"})
    return start_dashboard(settings, start_web, start_worker, browser, screenshots)


def test_runs_are_found_by_the_text_of_their_inputs(dashboard: Dashboard) -> None:
    d = dashboard
    workflow_id = d.api("POST", "/v1/workflows", {"name": "greeting", "definition": GREETING})["workflow_id"]
    runs = {name: d.api("POST", f"/v1/workflows/{workflow_id}/runs", {"inputs": {"name": name}})["run_id"]
            for name in ("Ada Lovelace", "Grace Hopper", "Alan Turing")}
    for run_id in runs.values():
        wait_for(lambda run_id=run_id: d.run_status(run_id) == "succeeded", timeout_s=40)
    d.sign_in()
    d.open("/ui/")
    from selenium.webdriver.common.keys import Keys

    d.find("#f-q").send_keys("hopper", Keys.ENTER)  # any case, a part of a value
    wait_for(lambda: "q=hopper" in d.driver.current_url, timeout_s=30)
    rows = d.find("#run-rows").text
    assert runs["Grace Hopper"][:8] in rows
    assert runs["Ada Lovelace"][:8] not in rows and runs["Alan Turing"][:8] not in rows
    assert "Searched the inputs of 3 runs" in d.text("#search-note")
    d.shot("runs-search")
    d.open("/ui/?q=50%25")  # LIKE's wildcards are searched as text: nothing has "50%"
    assert "No runs match." in d.text("#run-rows")


def test_an_llm_node_shows_its_prompt_answer_attempts_timeline_and_a_batch_its_children(
        llm_dashboard: Dashboard) -> None:
    d = llm_dashboard
    d.api("POST", "/v1/models/refresh")
    d.api("POST", "/v1/prompts", {"key": "haiku", "name": "Haiku", "labels": ["production"],
                                  "version": {"text": "Write a haiku about {{ topic }}.", "message": "first"}})
    workflow_id = d.api("POST", "/v1/workflows", {"name": "haiku-batch", "definition": HAIKU})["workflow_id"]
    run_id = d.api("POST", f"/v1/workflows/{workflow_id}/runs",
                   {"inputs": {"topic": "otters", "items": list(range(30))}})["run_id"]
    wait_for(lambda: d.run_status(run_id) == "succeeded", timeout_s=90)
    d.sign_in()
    d.open(f"/ui/runs/{run_id}?node=ask")
    inspector = d.find("#inspector").text
    assert "re-rendered now" in inspector
    prompt = d.text("#rendered-prompt")
    assert "Write a haiku about otters." in prompt and "Answer in 6 words." in prompt  # user and system messages
    assert "haiku v1" in inspector
    assert d.text("#answer-text")  # the model's answer
    attempts = d.all("#inspector table.attempts tbody tr")
    assert len(attempts) == 4  # each attempt: its figures, then its outcome
    assert "flaky" in attempts[1].text and "500" in attempts[1].text  # the failed attempt, its model and error
    assert "succeeded" in attempts[3].text and "flaky" in attempts[2].text and "$" in attempts[2].text
    # The timeline: the failed attempt, its backoff, then the attempt that answered
    kinds = [r.get_attribute("class") for r in d.all('#timeline g.row[data-node="ask"] rect')]
    assert any("s-failed" in k for k in kinds) and "k-backoff" in kinds and any("s-succeeded" in k for k in kinds)
    d.shot("run-llm-inspector")
    d.driver.execute_script("document.getElementById('timeline-section').scrollIntoView()")
    d.find("#timeline-section").screenshot(str(d.shots / "dashboard-run-timeline.png"))
    # The batch node opens to its child runs, a page at a time
    d.find("#composite-each summary").click()
    wait_for(lambda: len(d.all("#composite-each .children-runs tbody tr")) == 20, timeout_s=30)
    assert "30/30 done" in d.text("#composite-each summary")
    d.find("#composite-each .more-children").click()
    wait_for(lambda: len(d.all("#composite-each .children-runs tbody tr")) == 30, timeout_s=30)
    assert len(d.all('#composite-each a[href^="/ui/runs/"]')) == 30
    d.shot("run-children")


def test_a_run_waiting_for_an_answer_shows_why_it_is_not_moving(dashboard: Dashboard) -> None:
    d = dashboard
    workflow_id = d.api("POST", "/v1/workflows", {"name": "refund-approval", "definition": REFUND})["workflow_id"]
    run_id = d.api("POST", f"/v1/workflows/{workflow_id}/runs", {"inputs": {"customer": "Cy", "amount": 3}})["run_id"]
    wait_for(lambda: d.run_status(run_id) == "interrupted", timeout_s=40)
    d.sign_in()
    d.open(f"/ui/runs/{run_id}")
    panel = d.find("#diagnosis")
    assert panel.get_attribute("open") is not None  # open: nothing moves until someone answers
    assert "Why it is not moving" in panel.text
    assert "ago)" in panel.text and "ago) (" not in panel.text  # times as `08:25:01 UTC (3 s ago)`, said once
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:", panel.text)  # no raw ISO time left
    d.shot("run-diagnosis")


def test_a_prompt_label_is_moved_from_the_prompt_page(dashboard: Dashboard) -> None:
    d = dashboard
    d.api("POST", "/v1/prompts", {"key": "welcome", "name": "Welcome", "labels": ["production"],
                                  "version": {"text": "Hi {{ name }}", "message": "first"}})
    d.api("POST", "/v1/prompts/welcome/versions", {"base_version": 1, "text": "Hello {{ name }}!", "message": "warmer"})
    assert d.api("GET", "/v1/prompts/welcome")["labels"]["production"] == 1
    d.sign_in()
    d.open("/ui/prompts/welcome?version=2")
    field = d.find("#f-label")
    field.clear()
    field.send_keys("production")
    d.find("#label-form button[type=submit]").click()
    wait_for(lambda: "moved=production" in d.driver.current_url, timeout_s=30)
    assert "Label production now points at v2." in d.text("p.ok")
    assert d.api("GET", "/v1/prompts/welcome")["labels"]["production"] == 2
    # The same form without its CSRF token (a script posting with the cookie) is refused
    status = d.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/ui/prompts/welcome/labels', {method: 'POST', body: new URLSearchParams({label: 'production', "
        "version: '1'})}).then(r => done(r.status));")
    assert status == 403 and d.api("GET", "/v1/prompts/welcome")["labels"]["production"] == 2
    d.shot("prompt-labels")
