#!/usr/bin/env python
"""How fast the dashboard's run page renders in a browser: `python bench/dashboard_render.py`.

Starts what it needs on loopback against the local PostgreSQL and Redis — gunicorn as
`relayflow up` runs it and one `dramatiq workers --processes 2 --threads 8` group, on a fresh
`relayflow_bench_dashboard` database and Redis database 10 (both cleared at the end) — and a
headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium). Then:

- a run of 1,000 template nodes (ten columns of a hundred, node i waits for node i-100), run to
  the end, its page opened `--repeat` times;
- a run of a batch node over 10,000 items, its page opened `--repeat` times while it runs, once
  `--items-done` items are done (then the run is cancelled).

Each load reports the browser's own navigation timing (response end, DOMContentLoaded, load; ms
from the start of navigation) and the wall time until the graph is in the page; the first load
(version compiled, templates loaded) is reported apart as `cold`. The JSON goes to
bench/results/dashboard_<time>.json and a table is printed. Stops by itself (`--budget-s`).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
import redis as redis_lib  # noqa: E402

from api.cli.supervisor import Supervisor, child_env, web_command  # noqa: E402
from bench.harness import BenchError, WorkerGroup, libpq_url, worker_env  # noqa: E402
from bench.web_stack import failed, free_port, result_header, save_result, wait_http_ready  # noqa: E402

DB_NAME = "relayflow_bench_dashboard"  # its own: other benchmarks use relayflow_bench
REDIS_DB = 10
NODES, COLUMNS, ITEMS = 1000, 10, 10_000
CHROMIUM = os.environ.get("RELAYFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RELAYFLOW_CHROMEDRIVER", "/usr/bin/chromedriver")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="warm loads of each page, default 5")
    parser.add_argument("--items-done", type=int, default=300, help="batch items done before measuring, default 300")
    parser.add_argument("--budget-s", type=float, default=600.0, help="give up after this long, default 600")
    return parser.parse_args(argv)


def _urls() -> tuple[str, str, str]:
    pg = libpq_url(os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres")
    rd = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    base, _, _ = pg.rpartition("/")
    return f"{base}/postgres", f"{base}/{DB_NAME}", f"{rd.rpartition('/')[0]}/{REDIS_DB}"


def _fresh(admin_url: str, bench_url: str) -> None:
    from engine.db import migrate

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    migrate(bench_url)


def _cleanup(admin_url: str, redis_url: str) -> None:
    from engine import db

    for key, engine in list(db._engines.items()):
        engine.dispose()
        db._engines.pop(key, None)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    client = redis_lib.Redis.from_url(redis_url)
    try:
        if client.connection_pool.connection_kwargs.get("db") == REDIS_DB:
            client.flushdb()
    finally:
        client.close()


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        raise BenchError(f"needs Chromium and its driver ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860",
                "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class Api:
    """The JSON API with the bench's token."""

    def __init__(self, base_url: str, token: str) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60.0)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, path, json=body)
        if response.status_code >= 300:
            raise BenchError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    def wait(self, what: str, check: Any, deadline: float) -> None:
        while not check():
            if time.monotonic() > deadline:
                raise BenchError(f"{what}: not reached within the time budget")
            time.sleep(1.0)


def _load(driver: Any, url: str) -> dict[str, float]:
    """Open a page; the browser's navigation timing and the wall time until the graph is there (ms)."""
    from selenium.webdriver.common.by import By

    started = time.perf_counter()
    driver.get(url)
    while not driver.find_elements(By.CSS_SELECTOR, "#graph .node"):
        time.sleep(0.01)
    wall_ms = (time.perf_counter() - started) * 1000
    timing = driver.execute_script(
        "const n = performance.getEntriesByType('navigation')[0];"
        "return {response_end: n.responseEnd, dom_content_loaded: n.domContentLoadedEventEnd, load: n.loadEventEnd};")
    return {**{k: round(float(v), 1) for k, v in timing.items()}, "wall": round(wall_ms, 1)}


def _measure(driver: Any, url: str, repeat: int) -> dict[str, Any]:
    cold = _load(driver, url)
    warm = [_load(driver, url) for _ in range(repeat)]
    return {"cold": cold, "warm_median": {k: round(statistics.median(w[k] for w in warm), 1) for k in cold},
            "warm_max": {k: max(w[k] for w in warm) for k in cold}, "loads": warm}


def _sign_in(driver: Any, base_url: str, token: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(f"{base_url}/ui/signin")
    field = driver.find_element(By.ID, "token")
    field.send_keys(token, Keys.ENTER)
    deadline = time.monotonic() + 30
    while "/ui/signin" in driver.current_url:
        if time.monotonic() > deadline:
            raise BenchError("could not sign in to the dashboard")
        time.sleep(0.1)


def bench(api: Api, driver: Any, base_url: str, token: str, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """Both pages, measured."""
    nodes = [{"id": f"n{i}", "type": "template", "after": [f"n{i - NODES // COLUMNS}"] if i >= NODES // COLUMNS else [],
              "config": {"template": f"node {i}"}} for i in range(NODES)]
    workflow = api.call("POST", "/v1/workflows", {"name": "thousand", "definition": {"nodes": nodes}})["workflow_id"]
    run_id = api.call("POST", f"/v1/workflows/{workflow}/runs", {"inputs": {}})["run_id"]
    print(f"1,000-node run {run_id}: running it", flush=True)
    api.wait("the 1,000-node run", lambda: api.call("GET", f"/v1/runs/{run_id}")["status"] == "succeeded", deadline)
    _sign_in(driver, base_url, token)
    found: dict[str, Any] = {"run page, 1,000 nodes (succeeded)": _measure(driver, f"{base_url}/ui/runs/{run_id}",
                                                                        args.repeat)}
    definition = {"inputs": {"items": {"type": "array", "required": True}},
                  "nodes": [{"id": "each", "type": "batch",
                             "config": {"items": "{{ inputs.items }}", "concurrency": 20,
                                        "nodes": [{"id": "echo", "type": "template", "config": {"template": "{{ item }}"}}],
                                        "outputs": {"text": "{{ echo.text }}"}}}],
                  "outputs": {"texts": "{{ each.text }}"}}
    workflow = api.call("POST", "/v1/workflows", {"name": "ten-thousand", "definition": definition})["workflow_id"]
    run_id = api.call("POST", f"/v1/workflows/{workflow}/runs", {"inputs": {"items": list(range(ITEMS))}})["run_id"]
    print(f"10,000-item batch {run_id}: waiting for {args.items_done} items", flush=True)

    def done() -> int:
        return int((api.call("GET", f"/v1/runs/{run_id}")["nodes"][0].get("progress") or {}).get("done", 0))

    api.wait("the batch's first items", lambda: done() >= args.items_done, deadline)
    measured = _measure(driver, f"{base_url}/ui/runs/{run_id}", args.repeat)
    # the same page with the batch node expanded: its first page of child runs rendered too
    expanded = _measure(driver, f"{base_url}/ui/runs/{run_id}?node=each&expand=each", args.repeat)
    found["run page, batch of 10,000 items (running)"] = {**measured, "items_done_after": done()}
    found["run page, batch of 10,000 items, expanded"] = expanded
    api.call("POST", f"/v1/runs/{run_id}/cancel")
    return found


def print_table(found: dict[str, Any]) -> None:
    print(f"\n{'page':46} {'':6} {'response':>9} {'DOM ready':>10} {'load':>8} {'wall':>8}")
    for name, figures in found.items():
        for which in ("cold", "warm_median", "warm_max"):
            f = figures[which]
            print(f"{name:46} {which.replace('warm_', ''):6} {f['response_end']:8.0f}ms {f['dom_content_loaded']:8.0f}ms "
                  f"{f['load']:6.0f}ms {f['wall']:6.0f}ms")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    admin_url, bench_url, redis_url = _urls()
    log_dir = Path(tempfile.mkdtemp(prefix="relayflow-dashbench-"))
    supervisor = Supervisor(log_dir)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    queue = f"bench_dash_{os.getpid()}"
    res = result_header("bench/dashboard_render.py", argv, {"database": DB_NAME, "redis_db": REDIS_DB,
                                                            "web": "gunicorn gevent x2", "repeat": args.repeat,
                                                            "browser": CHROMIUM})
    deadline = time.monotonic() + args.budget_s
    driver = None
    try:
        print(f"setting up {DB_NAME} and Redis db {REDIS_DB} (logs in {log_dir})", flush=True)
        _fresh(admin_url, bench_url)
        from engine.tokens import ensure_local_token

        token = ensure_local_token(bench_url)
        limits = {"RELAYFLOW_DEFINITION_MAX_NODES": str(NODES)}
        env = {k: v for k, v in child_env(bench_url, redis_url).items() if not k.startswith("RELAYFLOW_")}
        supervisor.spawn("web", web_command(port, workers=2, worker_class="gevent", threads=64, connections=1000,
                                            control_socket=False), {**env, **limits, "RELAYFLOW_QUEUE_NAME": queue})
        with WorkerGroup("workers", "workers", {**worker_env(bench_url, redis_url, queue, 0), **limits}, log_dir):
            wait_http_ready(base_url, supervisor)
            driver = _browser()
            res["result"] = bench(Api(base_url, token), driver, base_url, token, args, deadline)
        path = save_result(res, "dashboard")
        print_table(res["result"])
        print(f"results: {path.relative_to(ROOT)}")
        return 0
    except BenchError as exc:
        return failed(exc, log_dir)
    finally:
        if driver is not None:
            driver.quit()
        supervisor.stop(timeout_s=15.0)
        try:
            _cleanup(admin_url, redis_url)
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"cleanup: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
