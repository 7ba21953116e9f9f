"""The dashboard (/ui) over Flask's test client: signing in and out, CSRF, tenancy, the forms that
start, answer and cancel runs. The same pages in a real browser: tests/browser/test_dashboard.py."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.db import get_engine
from engine.settings import Settings
from engine.store import Store
from engine.tokens import issue_token
from tests.conftest import ApiHelper

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REFUND = {k: v for k, v in yaml.safe_load((ROOT / "examples" / "human" / "refund-approval.yaml").read_text()).items()
          if k != "demo_inputs"}  # read by `relayflow up --demo`, not part of a definition
GREETING = {"inputs": {"name": {"type": "string", "required": True}, "times": {"type": "integer", "default": 2},
                       "loud": {"type": "boolean", "default": False}},
            "nodes": [{"id": "hi", "type": "template", "config": {"template": "hi {{ inputs.name }} x{{ inputs.times }}"}},
                      {"id": "bye", "type": "template", "config": {"template": "{{ hi.text }}, bye"}}],
            "outputs": {"text": "{{ bye.text }}"}}


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no CSRF field"
    return found.group(1)


def _signed_in(app: Any, token: str) -> Any:
    browser = app.test_client()
    form = browser.get("/ui/signin").get_data(as_text=True)
    response = browser.post("/ui/signin", data={"token": token, "csrf": _csrf(form), "next": "/ui/"})
    assert response.status_code == 303, response.get_data(as_text=True)
    return browser


def test_signing_in_keeps_the_token_in_an_httponly_lax_cookie_and_signing_out_clears_it(app: Any, token: str) -> None:
    browser = app.test_client()
    # Given no session, /ui sends the visitor to the sign-in page
    assert browser.get("/ui/").status_code == 303
    # When a wrong token is pasted, the page says why and sets no session
    form = browser.get("/ui/signin").get_data(as_text=True)
    refused = browser.post("/ui/signin", data={"token": "rf_wrong", "csrf": _csrf(form)})
    assert refused.status_code == 401 and "Unknown token" in refused.get_data(as_text=True)
    assert browser.get_cookie("relayflow_ui", path="/ui") is None
    # When the right one is pasted
    form = browser.get("/ui/signin").get_data(as_text=True)
    response = browser.post("/ui/signin", data={"token": token, "csrf": _csrf(form), "next": "/ui/workflows"})
    cookie = response.headers["Set-Cookie"]
    # Then it is kept where scripts cannot read it, and the runs page opens
    assert response.status_code == 303 and response.headers["Location"] == "/ui/workflows"
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/ui" in cookie
    page = browser.get("/ui/")
    assert page.status_code == 200 and "Content-Security-Policy" in page.headers
    # When signing out, the cookie is gone and /ui asks to sign in again
    out = browser.post("/ui/signout", data={"csrf": _csrf(page.get_data(as_text=True))})
    assert out.status_code == 303 and browser.get_cookie("relayflow_ui", path="/ui") is None
    assert browser.get("/ui/").headers["Location"].startswith("/ui/signin")


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(app: Any, api: ApiHelper, token: str,
                                                                       inline_worker: Any) -> None:
    # Given a run waiting for an answer, and a signed-in browser
    run_id = api.submit(api.create_workflow(REFUND), {"customer": "Ada", "amount": 5})
    api.wait(run_id, statuses=("interrupted",))
    browser = _signed_in(app, token)
    # When a form posts to cancel it without the token, with a wrong one, or from another origin
    no_token = browser.post(f"/ui/runs/{run_id}/cancel")
    wrong = browser.post(f"/ui/runs/{run_id}/cancel", data={"csrf": "0" * 64})
    page = browser.get(f"/ui/runs/{run_id}").get_data(as_text=True)
    elsewhere = browser.post(f"/ui/runs/{run_id}/cancel", data={"csrf": _csrf(page)},
                             headers={"Origin": "https://evil.example"})
    # Then each is refused and the run still waits
    assert [no_token.status_code, wrong.status_code, elsewhere.status_code] == [403, 403, 403]
    assert api.run(run_id)["status"] == "interrupted"
    # And the right token from this page cancels it
    assert browser.post(f"/ui/runs/{run_id}/cancel", data={"csrf": _csrf(page)}).status_code == 303
    assert api.run(run_id)["status"] == "cancelled"


def test_another_spaces_run_reads_as_not_found_and_shows_nothing_of_it(app: Any, api: ApiHelper, settings: Settings,
                                                                         inline_worker: Any) -> None:
    # Given a run of the default space, and a browser signed in to another space
    run_id = api.submit(api.create_workflow(GREETING, name="secret-flow"), {"name": "Ada"})
    api.wait(run_id)
    store = Store.from_engine(get_engine(settings))
    other = issue_token(store, "other", "visitor", ("admin",), create_space=True).token
    browser = _signed_in(app, other)
    # When it opens that run's pages
    for path in (f"/ui/runs/{run_id}", f"/ui/runs/{run_id}/state", f"/ui/runs/{run_id}?node=hi"):
        response = browser.get(path)
        body = response.get_data(as_text=True)
        # Then: not found, and neither the workflow nor the outputs show
        assert response.status_code == 404, path
        assert "secret-flow" not in body and "hi Ada" not in body and run_id[:8] not in body
    # And its runs page lists nothing of the default space
    assert "secret-flow" not in browser.get("/ui/").get_data(as_text=True)


def test_the_run_form_starts_a_run_and_the_run_page_shows_its_graph(app: Any, api: ApiHelper, token: str,
                                                                     inline_worker: Any) -> None:
    workflow_id = api.create_workflow(GREETING, name="greeting")
    browser = _signed_in(app, token)
    page = browser.get(f"/ui/workflows/{workflow_id}").get_data(as_text=True)
    # A wrong input shows the form again naming the field
    bad = browser.post(f"/ui/workflows/{workflow_id}/runs",
                       data={"csrf": _csrf(page), "in.name": "Ada", "in.times": "two", "in.loud": "false"})
    assert bad.status_code == 422 and "must be a whole number" in bad.get_data(as_text=True)
    # The right inputs start a run and open its page
    started = browser.post(f"/ui/workflows/{workflow_id}/runs",
                           data={"csrf": _csrf(page), "in.name": "Ada", "in.times": "3", "in.loud": "false"})
    assert started.status_code == 303
    run_id = started.headers["Location"].rsplit("/", 1)[1]
    assert api.wait(run_id)["outputs"] == {"text": "hi Ada x3, bye"}
    run_page = browser.get(f"/ui/runs/{run_id}?node=bye").get_data(as_text=True)
    assert 'data-node="hi"' in run_page and 'data-node="bye"' in run_page and "hi Ada x3, bye" in run_page
    state = browser.get(f"/ui/runs/{run_id}/state").get_json()
    assert state["status"] == "succeeded" and state["nodes"]["bye"][0] == "succeeded"
    # The runs page counts it and lists it
    runs = browser.get(f"/ui/?workflow={workflow_id}").get_data(as_text=True)
    assert run_id[:8] in runs and "<b>1</b> succeeded" in runs
    live = browser.get("/ui/runs/live").get_json()
    assert live["counts"]["succeeded"] == 1 and run_id[:8] in live["rows"]


def test_the_answer_forms_resume_a_question_then_a_schema_form(app: Any, api: ApiHelper, token: str,
                                                              inline_worker: Any) -> None:
    run_id = api.submit(api.create_workflow(REFUND), {"customer": "Ada", "amount": 42})
    api.wait(run_id, statuses=("interrupted",))
    browser = _signed_in(app, token)
    # The question's options become a select
    page = browser.get(f"/ui/runs/{run_id}").get_data(as_text=True)
    assert '<option value="yes">' in page
    event_id = api.run(run_id)["interrupt"]["event_id"]
    answered = browser.post(f"/ui/runs/{run_id}/resume",
                            data={"csrf": _csrf(page), "event_id": event_id, "in.answer": "yes"})
    assert answered.status_code == 303
    api.wait(run_id, statuses=("interrupted",))
    # The input node's schema becomes fields; a too-short reason is refused naming it
    run = api.run(run_id)
    page = browser.get(f"/ui/runs/{run_id}").get_data(as_text=True)
    assert 'name="in.reason"' in page and 'name="in.follow_up"' in page
    form = {"csrf": _csrf(page), "event_id": run["interrupt"]["event_id"], "in.follow_up": "false"}
    short = browser.post(f"/ui/runs/{run_id}/resume", data={**form, "in.reason": "no"})
    assert short.status_code == 422 and "data.reason" in short.get_data(as_text=True)
    assert browser.post(f"/ui/runs/{run_id}/resume", data={**form, "in.reason": "damaged"}).status_code == 303
    assert api.wait(run_id)["outputs"]["summary"] == "Ada: refund yes (damaged)"


def test_the_catalog_pages_render_and_never_show_a_key(app: Any, token: str, write_model: Any) -> None:
    write_model("fake-chat")
    browser = _signed_in(app, token)
    for path in ("/ui/workflows", "/ui/models", "/ui/prompts", "/ui/prompts?q=x", "/ui/api-docs"):
        response = browser.get(path)
        assert response.status_code == 200, path
    models = browser.get("/ui/models").get_data(as_text=True)
    assert "fake-chat" in models and "sk-fake" not in models and "TESTKEY" not in models
    with browser.get("/ui/swagger/js/swagger-ui-bundle.js") as bundle:  # Swagger UI from its package
        assert bundle.status_code == 200


def test_versions_compare_and_publish_and_an_operator_rereads_the_models(app: Any, api: ApiHelper, token: str,
                                                                          settings: Settings) -> None:
    workflow_id = api.create_workflow(GREETING, name="greeting")
    changed = {**GREETING, "nodes": [{**GREETING["nodes"][0], "config": {"template": "hello {{ inputs.name }}"}},
                                     GREETING["nodes"][1]]}
    assert api.client.put(f"/v1/workflows/{workflow_id}", json={"definition": changed}).status_code == 200
    browser = _signed_in(app, token)
    # Comparing v2 with v1 shows the changed line
    page = browser.get(f"/ui/workflows/{workflow_id}?version=2&compare=1").get_data(as_text=True)
    assert "<del>-    template: hi {{ inputs.name }} x{{ inputs.times }}</del>" in page
    assert "<ins>+    template: hello {{ inputs.name }}</ins>" in page
    # Publishing v1 from its page
    response = browser.post(f"/ui/workflows/{workflow_id}/publish?version=1", data={"csrf": _csrf(page)})
    assert response.status_code == 303
    assert api.client.get(f"/v1/workflows/{workflow_id}").get_json()["published_version"] == 1
    # The local token is an operator's: it may re-read the model files; a space admin may not
    refreshed = browser.post("/ui/models/refresh", data={"csrf": _csrf(page)})
    assert refreshed.status_code == 200 and "Re-read:" in refreshed.get_data(as_text=True)
    admin = issue_token(Store.from_engine(get_engine(settings)), "default", "admin", ("admin",)).token
    other = _signed_in(app, admin)
    models = other.get("/ui/models").get_data(as_text=True)
    assert "refresh-models" not in models
    assert other.post("/ui/models/refresh", data={"csrf": _csrf(models)}).status_code == 403


def test_prompt_versions_compare(app: Any, api: ApiHelper, token: str) -> None:
    created = api.client.post("/v1/prompts", json={"key": "greet", "name": "Greet",
                                                   "version": {"text": "Hello there.\nBye."}})
    assert created.status_code == 201, created.get_json()
    saved = api.client.post("/v1/prompts/greet/versions", json={"base_version": 1, "text": "Hello you.\nBye."})
    assert saved.status_code == 201, saved.get_json()
    browser = _signed_in(app, token)
    listing = browser.get("/ui/prompts?q=greet").get_data(as_text=True)
    assert 'href="/ui/prompts/greet"' in listing
    page = browser.get("/ui/prompts/greet?version=2&compare=1").get_data(as_text=True)
    assert "<del>-Hello there.</del>" in page and "<ins>+Hello you.</ins>" in page


def test_a_waiting_run_says_why_when_the_server_diagnoses(app: Any, api: ApiHelper, token: str,
                                                          inline_worker: Any) -> None:
    from api.runtime import runtime
    from api.ui import hooks

    with app.app_context():
        if hooks.find(runtime().service, hooks.DIAGNOSIS_PATHS) is None:
            pytest.skip("this server has no diagnosis yet (issue 13's `diagnosis` part; api/ui/hooks.py)")
    run_id = api.submit(api.create_workflow(REFUND), {"customer": "Ada", "amount": 5})
    api.wait(run_id, statuses=("interrupted",))
    page = _signed_in(app, token).get(f"/ui/runs/{run_id}").get_data(as_text=True)
    assert "Why it is not moving" in page and ">approve</a>" in page
