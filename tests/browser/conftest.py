"""Fixtures of the browser tests: headless Chromium (Debian's `chromium` and `chromium-driver`)
driven by Selenium through the system chromedriver, and the real stack it looks at (gunicorn and a
dramatiq worker on the test's database).

Each page's screenshot goes to a temporary folder, or to RELAYFLOW_SCREENSHOTS_DIR when set
(docs/img/ for the documentation). Without Chromium the tests skip, saying why.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.settings import Settings
from engine.tokens import ensure_local_token
from tests.conftest import wait_for

CHROMIUM = os.environ.get("RELAYFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RELAYFLOW_CHROMEDRIVER", "/usr/bin/chromedriver")
NEEDS_CHROMIUM = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
    reason=f"browser tests need Chromium and its driver ({CHROMIUM}, {CHROMEDRIVER}): "
           "apt-get install chromium chromium-driver")


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

        return wait_for(lambda: self.driver.find_elements(By.CSS_SELECTOR, css), timeout_s=20)[0]

    def all(self, css: str) -> list[Any]:
        """Every element the CSS selector names, now."""
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def shot(self, name: str) -> None:
        """Save the page as `dashboard-<name>.png`: the whole page's height, within reason."""
        height = self.driver.execute_script("return Math.min(document.body.scrollHeight, 1600)")
        self.driver.set_window_size(1280, max(600, int(height)))
        self.driver.execute_script("window.scrollTo(0, 0)")
        self.driver.save_screenshot(str(self.shots / f"dashboard-{name}.png"))
        self.driver.set_window_size(1280, 860)

    def sign_in(self, token: str | None = None) -> None:
        """Sign in through the form, with the keyboard only."""
        from selenium.webdriver.common.keys import Keys

        self.open("/ui/signin")
        field = self.find("#token")
        field.send_keys(token or self.token)
        field.send_keys(Keys.ENTER)
        wait_for(lambda: "/ui/signin" not in self.driver.current_url, timeout_s=30)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the JSON API with the bearer token (setting up what the browser then looks at)."""
        import httpx

        response = httpx.request(method, self.url + path, json=body, headers={"Authorization": f"Bearer {self.token}"},
                                 timeout=30)  # a loaded CI machine answers slowly
        assert response.status_code < 300, response.text
        return response.json()

    def run_status(self, run_id: str) -> str:
        """The run's status, from the API."""
        return str(self.api("GET", f"/v1/runs/{run_id}")["status"])

    def attr(self, css: str, name: str) -> str:
        """An attribute (or with name "text", the text) of the element; "" while the page is reloading."""
        from selenium.common.exceptions import StaleElementReferenceException

        try:
            element = self.find(css)
            return str(element.text if name == "text" else element.get_attribute(name) or "")
        except StaleElementReferenceException:  # the page reloaded itself in between
            return ""

    def text(self, css: str) -> str:
        """The element's text ("" while the page is reloading)."""
        return self.attr(css, "text")

    def node_class(self, node_id: str) -> str:
        """The status class of a node of the graph on the page."""
        return self.attr(f'#graph .node[data-node="{node_id}"]', "class")


def start_dashboard(settings: Settings, start_web: Callable[..., Any], start_worker: Callable[..., Any], browser: Any,
                    screenshots: Path) -> Dashboard:
    """gunicorn and a dramatiq worker on this test's database, a token of the default space, a browser."""
    token = ensure_local_token(settings.database_url or "")
    web = start_web()
    start_worker(processes=1, threads=4)
    return Dashboard(browser, web.url, token, screenshots)


@pytest.fixture
def dashboard(settings: Settings, start_web: Callable[..., Any], start_worker: Callable[..., Any], browser: Any,
              screenshots: Path) -> Dashboard:
    """The stack and a browser on it."""
    return start_dashboard(settings, start_web, start_worker, browser, screenshots)
