"""The `loop` node's cost per iteration, early and late in a long loop (is it flat?).

Runs one count loop of N iterations (default 1,000) in this thread with the production store
and executor on a database of its own (`relayflow_loop_bench`: created, migrated, dropped) and
the in-process dispatcher (no Redis). For each iteration it records the wall time and the
statements executed (pool checkouts: the store checks a connection out per statement), then
compares the first tenth with the last tenth. The iteration that ends the loop also gathers every iteration's outputs
(one query) and is reported on its own.

    PYTHONPATH=. python -m bench.loop_iterations [N]
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from collections import Counter
from typing import Any

import psycopg
from sqlalchemy import event

from bench.harness import libpq_url, server_urls

DB_NAME = "relayflow_loop_bench"


def loop_definition(count: int) -> dict[str, Any]:
    """A count loop adding each index to a loop variable, with one per-iteration output."""
    return {"nodes": [{"id": "L", "type": "loop", "config": {
        "mode": "count", "count": count, "max_iterations": count, "variables": {"total": 0},
        "nodes": [{"id": "add", "type": "set_variable", "config": {"values": {"total": "{{ vars.total + index }}"}}}],
        "outputs": {"i": "{{ index }}"}}}],
        "outputs": {"i": "{{ L.i }}", "variables": "{{ L.variables }}"}}


def main(count: int) -> dict[str, Any]:
    from engine.db import get_engine, migrate
    from engine.executor import Executor
    from engine.service import Relayflow
    from engine.settings import Settings
    from engine.store import Store
    from engine.testing import InlineWorker, MemoryDispatcher
    from engine.tokens import DEFAULT_SPACE

    admin_url, _, _ = server_urls()
    url = admin_url.rsplit("/", 1)[0] + "/" + DB_NAME
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    try:
        migrate(url)
        settings = Settings(database_url=url, loop_max_iterations=max(count, 1000))
        engine = get_engine(settings, pre_ping=False)
        statements: Counter[str] = Counter()

        # the hot path runs raw psycopg on a pooled connection, one checkout per statement
        @event.listens_for(engine, "checkout")
        def count_statement(*_args: Any) -> None:
            statements["n"] += 1

        messages = MemoryDispatcher()
        store = Store.from_engine(engine)
        store.catalog.ensure_space(DEFAULT_SPACE, "Default space")
        service = Relayflow(store, messages, settings)
        worker = InlineWorker(Executor(store, messages, settings), messages)
        workflow = service.create_workflow(DEFAULT_SPACE, "loop-bench", None, loop_definition(count))["workflow_id"]
        run_id = service.submit_run(DEFAULT_SPACE, workflow, {})["run_id"]
        marks: list[tuple[float, int]] = []  # (time, statements so far) each time the loop node ran
        started = time.perf_counter()
        while (message := messages.pop_due()) is not None:
            worker.executor.run_node(*message)
            if message[0] == run_id:
                marks.append((time.perf_counter(), statements["n"]))
        elapsed = time.perf_counter() - started
        run = store.views.run_with_nodes(run_id, None)
        assert run is not None and run[0]["status"] == "succeeded", run
        assert run[0]["outputs"]["i"] == list(range(count))
        wall = [b[0] - a[0] for a, b in zip(marks, marks[1:], strict=False)]
        sql = [b[1] - a[1] for a, b in zip(marks, marks[1:], strict=False)]
        tenth = max(count // 10, 1)
        first, last = wall[:tenth], wall[-tenth - 1:-1]
        return {
            "iterations": count, "total_s": round(elapsed, 2),
            "first_tenth_ms": {"mean": round(statistics.mean(first) * 1000, 2),
                               "median": round(statistics.median(first) * 1000, 2)},
            "last_tenth_ms": {"mean": round(statistics.mean(last) * 1000, 2),
                              "median": round(statistics.median(last) * 1000, 2)},
            "ratio_last_to_first_median": round(statistics.median(last) / statistics.median(first), 3),
            "checkouts_per_iteration": {"first_tenth": sorted(set(sql[:tenth])),
                                         "last_tenth": sorted(set(sql[-tenth - 1:-1]))},
            "final_iteration_with_gather_ms": round(wall[-1] * 1000, 2),
        }
    finally:
        from engine import db
        for key, engine in list(db._engines.items()):
            engine.dispose()
            db._engines.pop(key, None)
        with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000), indent=2))
