"""The dashboard in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`)
driven by Selenium, against the real web process (gunicorn) and a real worker.

Each page's screenshot is saved under a temporary folder, or under RELAYFLOW_SCREENSHOTS_DIR when
set (docs/img/ for the documentation). Skipped, saying why, where Chromium is not installed.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.ui.hooks import can_rerun
from engine.db import get_engine
from engine.settings import Settings
from engine.store import Store
from engine.tokens import issue_token
from tests.browser.conftest import NEEDS_CHROMIUM, Dashboard
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, NEEDS_CHROMIUM]

REFUND = {k: v for k, v in yaml.safe_load((ROOT / "examples" / "human" / "refund-approval.yaml").read_text()).items()
          if k != "demo_inputs"}
# Three steps a second or so apart: slow enough to watch each one turn green.
STEPS = {"name": "three-steps", "description": "Greets someone, slowly.",
         "inputs": {"name": {"type": "string", "required": True, "description": "who to greet"},
                    "polite": {"type": "boolean", "default": True}},
         "nodes": [{"id": "fetch", "type": "sleep", "config": {"seconds": 1.2}},
                   # long enough that a loaded machine still paints `fetch` green before `greet` ends
                   {"id": "think", "type": "sleep", "after": ["fetch"], "config": {"seconds": 3}},
                   {"id": "greet", "type": "template", "after": ["think"],
                    "config": {"template": "Hello, {{ inputs.name }}!"}},
                   {"id": "count", "type": "template", "after": ["fetch"], "config": {"template": "{{ inputs.name|length }}"}}],
         "outputs": {"text": "{{ greet.text }}", "letters": "{{ count.text }}"}}


def test_sign_in_start_a_run_from_the_form_and_watch_its_nodes_turn_green(dashboard: Dashboard) -> None:
    d = dashboard
    workflow_id = d.api("POST", "/v1/workflows", {"name": "three-steps", "description": STEPS["description"],
                                                  "definition": STEPS})["workflow_id"]
    d.open("/ui/")
    assert "/ui/signin" in d.driver.current_url  # not signed in: the sign-in page
    d.shot("signin")
    d.sign_in()
    d.open("/ui/workflows")
    d.shot("workflows")
    d.find(f'a[href="/ui/workflows/{workflow_id}"]').click()
    d.find("#f-name").send_keys("Ada")
    d.shot("workflow")
    d.find("#start-run").click()
    wait_for(lambda: "/ui/runs/" in d.driver.current_url, timeout_s=30)
    run_id = d.driver.current_url.rsplit("/", 1)[1].split("?")[0]
    # A mark on this page: it is gone if the page reloads, so what follows is repainted in place.
    d.driver.execute_script("window.relayflowMark = 1")
    wait_for(lambda: "s-succeeded" in d.node_class("fetch"), timeout_s=40)
    assert "s-succeeded" not in d.node_class("greet")  # still to come
    assert d.driver.execute_script("return window.relayflowMark") == 1
    d.shot("run-live")
    wait_for(lambda: all("s-succeeded" in d.node_class(n) for n in ("fetch", "think", "greet", "count")), timeout_s=40)
    wait_for(lambda: d.text("#run-status") == "succeeded", timeout_s=30)
    assert d.run_status(run_id) == "succeeded"
    # once ended, the page reloads itself (to show the outputs) and stops following
    wait_for(lambda: d.attr("#run", "data-live") == "no", timeout_s=30)
    # The inspector opens from the graph with the keyboard alone
    from selenium.webdriver.common.keys import Keys

    d.find('#graph .node[data-node="greet"]').send_keys(Keys.ENTER)
    wait_for(lambda: "node=greet" in d.driver.current_url, timeout_s=30)
    assert "Hello, Ada!" in d.find("#inspector").text
    d.shot("run-inspector")
    d.open("/ui/")
    assert run_id[:8] in d.find("#run-rows").text
    d.shot("runs")


def test_answer_a_question_then_a_form(dashboard: Dashboard) -> None:
    d = dashboard
    workflow_id = d.api("POST", "/v1/workflows", {"name": "refund-approval", "definition": REFUND})["workflow_id"]
    run_id = d.api("POST", f"/v1/workflows/{workflow_id}/runs", {"inputs": {"customer": "Ada", "amount": 42}})["run_id"]
    wait_for(lambda: d.run_status(run_id) == "interrupted", timeout_s=40)
    d.sign_in()
    d.open(f"/ui/runs/{run_id}")
    assert "Refund 42 EUR to Ada?" in d.find(".answer").text
    d.shot("run-question")
    from selenium.webdriver.support.ui import Select

    Select(d.find("#f-answer")).select_by_visible_text("yes")
    d.find("#answer-form button[type=submit]").click()
    # The next node asks for a form built from its JSON schema
    d.find("#f-reason")
    wait_for(lambda: d.all("#f-reason"), timeout_s=40)
    d.find("#f-reason").send_keys("damaged in transit")
    d.shot("run-form")
    d.find("#answer-form button[type=submit]").click()
    wait_for(lambda: d.run_status(run_id) == "succeeded", timeout_s=40)
    # the page reloads itself once the run has ended, showing the outputs
    wait_for(lambda: "Ada: refund yes (damaged in transit)" in d.text("#inspector"), timeout_s=30)


def test_cancel_a_run_and_a_post_without_the_csrf_token_is_refused(dashboard: Dashboard) -> None:
    d = dashboard
    workflow_id = d.api("POST", "/v1/workflows", {"name": "refund-approval", "definition": REFUND})["workflow_id"]
    run_id = d.api("POST", f"/v1/workflows/{workflow_id}/runs", {"inputs": {"customer": "Bo", "amount": 7}})["run_id"]
    wait_for(lambda: d.run_status(run_id) == "interrupted", timeout_s=40)
    d.sign_in()
    d.open(f"/ui/runs/{run_id}")
    # A script on the page posting without the CSRF token (the cookie goes with it) is refused
    status = d.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('/ui/runs/{run_id}/cancel', {{method: 'POST'}}).then(r => done(r.status));")
    assert status == 403 and d.run_status(run_id) == "interrupted"
    # The page's own Cancel button works
    d.find("#cancel").click()
    wait_for(lambda: d.text("#run-status") == "cancelled", timeout_s=30)
    assert d.run_status(run_id) == "cancelled"
    d.shot("run-cancelled")


def test_another_spaces_run_shows_nothing_and_sign_out_clears_the_cookie(dashboard: Dashboard,
                                                                          settings: Settings) -> None:
    d = dashboard
    workflow_id = d.api("POST", "/v1/workflows", {"name": "secret-flow", "definition": STEPS})["workflow_id"]
    run_id = d.api("POST", f"/v1/workflows/{workflow_id}/runs", {"inputs": {"name": "Zed"}})["run_id"]
    wait_for(lambda: d.run_status(run_id) == "succeeded", timeout_s=40)
    other = issue_token(Store.from_engine(get_engine(settings)), "other", "visitor", ("admin",), create_space=True).token
    d.sign_in(other)
    d.open(f"/ui/runs/{run_id}")
    page = d.find("main").text
    assert "There is nothing here." in page
    assert "secret-flow" not in d.driver.page_source and "Zed" not in d.driver.page_source
    d.shot("not-found")
    d.open("/ui/")
    assert "secret-flow" not in d.driver.page_source
    # Sign out: the cookie is gone and /ui asks to sign in again
    assert d.driver.get_cookie("relayflow_ui") is not None
    d.find(".signout button").click()
    wait_for(lambda: "/ui/signin" in d.driver.current_url, timeout_s=30)
    assert d.driver.get_cookie("relayflow_ui") is None
    d.open("/ui/")
    assert "/ui/signin" in d.driver.current_url


def test_rerun_from_a_node(dashboard: Dashboard, app: Any) -> None:
    with app.app_context():
        if not can_rerun():
            pytest.skip("this server has no rerun from a node yet (issue 13's `rerun` part; api/ui/hooks.py)")
    d = dashboard
    workflow_id = d.api("POST", "/v1/workflows", {"name": "three-steps", "definition": STEPS})["workflow_id"]
    run_id = d.api("POST", f"/v1/workflows/{workflow_id}/runs", {"inputs": {"name": "Ada"}})["run_id"]
    wait_for(lambda: d.run_status(run_id) == "succeeded", timeout_s=40)
    d.sign_in()
    d.open(f"/ui/runs/{run_id}?node=think")
    d.find("#rerun").click()
    wait_for(lambda: run_id not in d.driver.current_url and "/ui/runs/" in d.driver.current_url, timeout_s=30)
    rerun_id = d.driver.current_url.rsplit("/", 1)[1].split("?")[0]
    wait_for(lambda: d.run_status(rerun_id) == "succeeded", timeout_s=40)
    assert d.api("GET", f"/v1/runs/{rerun_id}").get("source_run_id") == run_id
    wait_for(lambda: d.attr("#run", "data-live") == "no", timeout_s=30)  # the page reloaded once it ended
    assert "rerun of" in d.text(".run-head")
    d.shot("run-rerun")


def test_catalog_pages(dashboard: Dashboard) -> None:
    d = dashboard
    d.api("POST", "/v1/prompts", {"key": "greeting", "name": "Greeting", "description": "Says hello",
                                  "version": {"text": "Hello there, how can I help?", "message": "first"}})
    workflow_id = d.api("POST", "/v1/workflows", {"name": "three-steps", "definition": STEPS})["workflow_id"]
    slower = {**STEPS, "nodes": [{**STEPS["nodes"][0], "config": {"seconds": 2}}, *STEPS["nodes"][1:]]}
    d.api("PUT", f"/v1/workflows/{workflow_id}", {"definition": slower})
    d.sign_in()
    for name, path in (("models", "/ui/models"), ("prompts", "/ui/prompts"), ("prompt", "/ui/prompts/greeting"),
                       ("workflow-compare", f"/ui/workflows/{workflow_id}?version=2&compare=1")):
        d.open(path)
        d.find("h1")
        d.shot(name)
    d.open("/ui/api-docs")
    wait_for(lambda: d.all("#swagger-ui .opblock"), timeout_s=40)  # Swagger UI drew the routes
    time.sleep(0.3)
    d.shot("api-docs")
