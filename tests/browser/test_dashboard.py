"""The dashboard in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`)
driven by Selenium, against the real web process (gunicorn) and a real worker.

Each page's screenshot is saved under a temporary folder, or under RELAYFLOW_SCREENSHOTS_DIR when
set (docs/img/ for the documentation). Skipped, saying why, where Chromium is not installed.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.db import get_engine
from engine.settings import Settings
from engine.store import Store
from engine.tokens import ensure_local_token, issue_token
from tests.conftest import wait_for

CHROMIUM = os.environ.get("RELAYFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RELAYFLOW_CHROMEDRIVER", "/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
                       reason=f"browser tests need Chromium and its driver ({CHROMIUM}, {CHROMEDRIVER}): "
                              "apt-get install chromium chromium-driver"),
]

REFUND = {k: v for k, v in yaml.safe_load((ROOT / "examples" / "human" / "refund-approval.yaml").read_text()).items()
          if k != "demo_inputs"}
# Three steps a second or so apart: slow enough to watch each one turn green.
STEPS = {"name": "three-steps", "description": "Greets someone, slowly.",
         "inputs": {"name": {"type": "string", "required": True, "description": "who to greet"},
                    "polite": {"type": "boolean", "default": True}},
         "nodes": [{"id": "fetch", "type": "sleep", "config": {"seconds": 1.2}},
                   {"id": "think", "type": "sleep", "after": ["fetch"], "config": {"seconds": 1.2}},
                   {"id": "greet", "type": "template", "after": ["think"],
                    "config": {"template": "Hello, {{ inputs.name }}!"}},
                   {"id": "count", "type": "template", "after": ["fetch"], "config": {"template": "{{ inputs.name|length }}"}}],
         "outputs": {"text": "{{ greet.text }}", "letters": "{{ count.text }}"}}


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each page's screenshot goes."""
    chosen = os.environ.get("RELAYFLOW_SCREENSHOTS_DIR")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium through the system chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860",
                "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


class Dashboard:
    """The running stack and a browser on it."""

    def __init__(self, driver: Any, url: str, token: str, shots: Path) -> None:
        self.driver, self.url, self.token, self.shots = driver, url, token, shots

    def open(self, path: str) -> None:
        """Load a page of the dashboard."""
        self.driver.get(self.url + path)

    def find(self, css: str) -> Any:
        """The element the CSS selector names (waits a little for it)."""
        from selenium.webdriver.common.by import By

        return wait_for(lambda: self.driver.find_elements(By.CSS_SELECTOR, css), timeout_s=10)[0]

    def all(self, css: str) -> list[Any]:
        """Every element the CSS selector names, now."""
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def shot(self, name: str) -> None:
        """Save the page as `<name>.png`: the whole page's height, within reason."""
        height = self.driver.execute_script("return Math.min(document.body.scrollHeight, 1600)")
        self.driver.set_window_size(1280, max(600, int(height)))
        self.driver.execute_script("window.scrollTo(0, 0)")
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))
        self.driver.set_window_size(1280, 860)

    def sign_in(self, token: str | None = None) -> None:
        """Sign in through the form, with the keyboard only."""
        from selenium.webdriver.common.keys import Keys

        self.open("/ui/signin")
        field = self.find("#token")
        field.send_keys(token or self.token)
        field.send_keys(Keys.ENTER)
        wait_for(lambda: "/ui/signin" not in self.driver.current_url, timeout_s=10)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the JSON API with the bearer token (setting up what the browser then looks at)."""
        import httpx

        response = httpx.request(method, self.url + path, json=body, headers={"Authorization": f"Bearer {self.token}"},
                                 timeout=10)
        assert response.status_code < 300, response.text
        return response.json()

    def run_status(self, run_id: str) -> str:
        """The run's status, from the API."""
        return str(self.api("GET", f"/v1/runs/{run_id}")["status"])

    def node_class(self, node_id: str) -> str:
        """The status class of a node of the graph on the page."""
        return str(self.find(f'#graph .node[data-node="{node_id}"]').get_attribute("class"))


@pytest.fixture
def dashboard(settings: Settings, start_web: Callable[..., Any], start_worker: Callable[..., Any], browser: Any,
              screenshots: Path) -> Dashboard:
    """gunicorn and a dramatiq worker on this test's database, a token of the default space, a browser."""
    token = ensure_local_token(settings.database_url or "")
    web = start_web()
    start_worker(processes=1, threads=4)
    return Dashboard(browser, web.url, token, screenshots)


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
    wait_for(lambda: "/ui/runs/" in d.driver.current_url, timeout_s=10)
    run_id = d.driver.current_url.rsplit("/", 1)[1].split("?")[0]
    # A mark on this page: it is gone if the page reloads, so what follows is repainted in place.
    d.driver.execute_script("window.relayflowMark = 1")
    wait_for(lambda: "s-succeeded" in d.node_class("fetch"), timeout_s=20)
    assert "s-succeeded" not in d.node_class("greet")  # still to come
    assert d.driver.execute_script("return window.relayflowMark") == 1
    d.shot("run-live")
    wait_for(lambda: all("s-succeeded" in d.node_class(n) for n in ("fetch", "think", "greet", "count")), timeout_s=20)
    wait_for(lambda: d.find("#run-status").text == "succeeded", timeout_s=10)
    assert d.run_status(run_id) == "succeeded"
    # The inspector opens from the graph with the keyboard alone
    from selenium.webdriver.common.keys import Keys

    d.find('#graph .node[data-node="greet"]').send_keys(Keys.ENTER)
    wait_for(lambda: "node=greet" in d.driver.current_url, timeout_s=10)
    assert "Hello, Ada!" in d.find("#inspector").text
    d.shot("run-inspector")
    d.open("/ui/")
    assert run_id[:8] in d.find("#run-rows").text
    d.shot("runs")


def test_answer_a_question_then_a_form(dashboard: Dashboard) -> None:
    d = dashboard
    workflow_id = d.api("POST", "/v1/workflows", {"name": "refund-approval", "definition": REFUND})["workflow_id"]
    run_id = d.api("POST", f"/v1/workflows/{workflow_id}/runs", {"inputs": {"customer": "Ada", "amount": 42}})["run_id"]
    wait_for(lambda: d.run_status(run_id) == "interrupted", timeout_s=20)
    d.sign_in()
    d.open(f"/ui/runs/{run_id}")
    assert "Refund 42 EUR to Ada?" in d.find(".answer").text
    d.shot("run-question")
    from selenium.webdriver.support.ui import Select

    Select(d.find("#f-answer")).select_by_visible_text("yes")
    d.find("#answer-form button[type=submit]").click()
    # The next node asks for a form built from its JSON schema
    d.find("#f-reason")
    wait_for(lambda: d.all("#f-reason"), timeout_s=20)
    d.find("#f-reason").send_keys("damaged in transit")
    d.shot("run-form")
    d.find("#answer-form button[type=submit]").click()
    wait_for(lambda: d.run_status(run_id) == "succeeded", timeout_s=20)
    # the page reloads itself once the run has ended, showing the outputs
    wait_for(lambda: "Ada: refund yes (damaged in transit)" in d.find("#inspector").text, timeout_s=10)


def test_cancel_a_run_and_a_post_without_the_csrf_token_is_refused(dashboard: Dashboard) -> None:
    d = dashboard
    workflow_id = d.api("POST", "/v1/workflows", {"name": "refund-approval", "definition": REFUND})["workflow_id"]
    run_id = d.api("POST", f"/v1/workflows/{workflow_id}/runs", {"inputs": {"customer": "Bo", "amount": 7}})["run_id"]
    wait_for(lambda: d.run_status(run_id) == "interrupted", timeout_s=20)
    d.sign_in()
    d.open(f"/ui/runs/{run_id}")
    # A script on the page posting without the CSRF token (the cookie goes with it) is refused
    status = d.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('/ui/runs/{run_id}/cancel', {{method: 'POST'}}).then(r => done(r.status));")
    assert status == 403 and d.run_status(run_id) == "interrupted"
    # The page's own Cancel button works
    d.find("#cancel").click()
    wait_for(lambda: d.find("#run-status").text == "cancelled", timeout_s=10)
    assert d.run_status(run_id) == "cancelled"
    d.shot("run-cancelled")


def test_another_spaces_run_shows_nothing_and_sign_out_clears_the_cookie(dashboard: Dashboard,
                                                                          settings: Settings) -> None:
    d = dashboard
    workflow_id = d.api("POST", "/v1/workflows", {"name": "secret-flow", "definition": STEPS})["workflow_id"]
    run_id = d.api("POST", f"/v1/workflows/{workflow_id}/runs", {"inputs": {"name": "Zed"}})["run_id"]
    wait_for(lambda: d.run_status(run_id) == "succeeded", timeout_s=20)
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
    wait_for(lambda: "/ui/signin" in d.driver.current_url, timeout_s=10)
    assert d.driver.get_cookie("relayflow_ui") is None
    d.open("/ui/")
    assert "/ui/signin" in d.driver.current_url


def test_catalog_pages(dashboard: Dashboard) -> None:
    d = dashboard
    d.api("POST", "/v1/prompts", {"key": "greeting", "name": "Greeting", "description": "Says hello",
                                  "version": {"text": "Hello there, how can I help?", "message": "first"}})
    d.sign_in()
    for name, path in (("models", "/ui/models"), ("prompts", "/ui/prompts"), ("prompt", "/ui/prompts/greeting")):
        d.open(path)
        d.find("h1")
        d.shot(name)
    d.open("/ui/api-docs")
    wait_for(lambda: d.all("#swagger-ui .opblock"), timeout_s=20)  # Swagger UI drew the routes
    time.sleep(0.3)
    d.shot("api-docs")
