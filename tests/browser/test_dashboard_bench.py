"""How fast the run page of a big run loads in the browser: a 1,000-node run and a 10,000-item batch.

A benchmark, not an assertion: the times are printed and written to `dashboard-bench.json` beside
the screenshots (docs/dashboard.md reports them). It keeps a worker busy for a minute, so the suite
skips it unless asked; run it alone:
    RELAYFLOW_DASHBOARD_BENCH=1 python -m pytest -n 0 -s tests/browser/test_dashboard_bench.py
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.settings import Settings
from tests.browser.conftest import NEEDS_CHROMIUM, Dashboard, start_dashboard
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, NEEDS_CHROMIUM,
              pytest.mark.skipif(os.environ.get("RELAYFLOW_DASHBOARD_BENCH") != "1",
                                 reason="a benchmark: set RELAYFLOW_DASHBOARD_BENCH=1 to run it")]

NODES = 1000
COLUMNS = 10  # node i waits for node i-100: ten columns of a hundred
ITEMS = 10_000


@pytest.fixture
def dashboard_stack(settings: Settings, start_web: Callable[..., Any], start_worker: Callable[..., Any], browser: Any,
                    screenshots: Path) -> Dashboard:
    """The stack, allowed definitions of 1,000 nodes."""
    settings.definition_max_nodes = NODES
    return start_dashboard(settings, start_web, start_worker, browser, screenshots)


def _load_ms(d: Dashboard, path: str) -> dict[str, float]:
    """Open a page and read the browser's own navigation timing (ms from the start of navigation)."""
    started = time.perf_counter()
    d.open(path)
    d.find("#graph .node")
    wall_ms = (time.perf_counter() - started) * 1000
    timing = d.driver.execute_script(
        "const n = performance.getEntriesByType('navigation')[0];"
        "return {response_end: n.responseEnd, dom_content_loaded: n.domContentLoadedEventEnd, load: n.loadEventEnd};")
    return {**{k: round(float(v), 1) for k, v in timing.items()}, "wall": round(wall_ms, 1)}


def _record(screenshots: Path, name: str, figures: dict[str, Any]) -> None:
    path = screenshots / "dashboard-bench.json"
    found = json.loads(path.read_text()) if path.exists() else {}
    found[name] = figures
    path.write_text(json.dumps(found, indent=2))
    print(f"\n{name}: {figures}")


def test_run_page_of_a_1000_node_run(dashboard_stack: Dashboard, screenshots: Path) -> None:
    d = dashboard_stack
    nodes = [{"id": f"n{i}", "type": "template", "after": [f"n{i - NODES // COLUMNS}"] if i >= NODES // COLUMNS else [],
              "config": {"template": f"node {i}"}} for i in range(NODES)]
    workflow_id = d.api("POST", "/v1/workflows", {"name": "thousand", "definition": {"nodes": nodes}})["workflow_id"]
    run_id = d.api("POST", f"/v1/workflows/{workflow_id}/runs", {"inputs": {}})["run_id"]
    wait_for(lambda: d.run_status(run_id) == "succeeded", timeout_s=240, interval_s=1)
    d.sign_in()
    _load_ms(d, f"/ui/runs/{run_id}")  # warm: the version compiled, the templates loaded
    figures = _load_ms(d, f"/ui/runs/{run_id}")
    assert len(d.all("#graph .node.s-succeeded")) == NODES
    d.shot("bench-1000-nodes")
    _record(screenshots, "run page, 1,000 nodes", figures)


def test_run_page_of_a_10000_item_batch(dashboard_stack: Dashboard, screenshots: Path) -> None:
    d = dashboard_stack
    definition = {"inputs": {"items": {"type": "array", "required": True}},
                  "nodes": [{"id": "each", "type": "batch",
                             "config": {"items": "{{ inputs.items }}", "concurrency": 20,
                                        "nodes": [{"id": "echo", "type": "template", "config": {"template": "{{ item }}"}}],
                                        "outputs": {"text": "{{ echo.text }}"}}}],
                  "outputs": {"texts": "{{ each.text }}"}}
    workflow_id = d.api("POST", "/v1/workflows", {"name": "ten-thousand", "definition": definition})["workflow_id"]
    run_id = d.api("POST", f"/v1/workflows/{workflow_id}/runs", {"inputs": {"items": list(range(ITEMS))}})["run_id"]
    # measured while it runs (its page is opened most then), once hundreds of items are done
    wait_for(lambda: (d.api("GET", f"/v1/runs/{run_id}")["nodes"][0].get("progress") or {}).get("done", 0) >= 300,
             timeout_s=240, interval_s=1)
    d.sign_in()
    _load_ms(d, f"/ui/runs/{run_id}")
    figures = _load_ms(d, f"/ui/runs/{run_id}")
    progress = d.api("GET", f"/v1/runs/{run_id}")["nodes"][0]["progress"]
    d.shot("bench-10000-items")
    d.api("POST", f"/v1/runs/{run_id}/cancel")
    _record(screenshots, "run page, batch of 10,000 items", {**figures, "items_done_then": progress["done"]})
