#!/usr/bin/env python
"""PostgreSQL round trips of one submit and one poll through the API: `python bench/request_round_trips.py`.

The real Flask app in this process (its test client: no HTTP server, the same views, the same
store and pool as a gunicorn worker) on a fresh benchmark database (bench/harness.py:
`RELAYFLOW_BENCH_DB`, default relayflow_bench; Redis database `RELAYFLOW_BENCH_REDIS_DB`, default
14, flushed; no worker runs: the node messages stay queued). Every protocol message of the app's
connections is traced with libpq (bench/counting.py), so BEGIN, COMMIT, pool pings and psycopg's
own prepares count as the round trips they are. After a traced warm-up (tokens, versions and
prepared statements as a long-lived web process has them), `--requests` submits of the two-node
workflow of bench/web_stack.py, then as many polls of one run, each traced on its own: the mean,
the most any one took, and the statements by kind. Runs against whatever `engine`/`api` are on
PYTHONPATH, so the same script measures another checkout (`PYTHONPATH=/other/checkout`).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.counting import LibpqTracer  # noqa: E402
from bench.harness import DB_NAME, REDIS_DB, drop_database, flush_redis, fresh_database, server_urls  # noqa: E402
from bench.web_stack import WORKFLOW  # noqa: E402


def _traced(tracer: LibpqTracer, request: Any) -> dict[str, Any]:
    tracer.start()
    request()
    return tracer.stop()


def measure(requests: int) -> dict[str, Any]:
    """Round trips per submit and per poll (mean, max, by kind) on a fresh benchmark database."""
    from api import create_app
    from engine.settings import Settings
    from engine.tokens import ensure_local_token

    admin_url, bench_url, redis_url = server_urls()
    flush_redis(redis_url)
    fresh_database(admin_url, bench_url)
    try:
        settings = Settings(database_url=bench_url, redis_url=redis_url, queue_name="bench_round_trips")
        token = ensure_local_token(settings.database_url or "")
        app = create_app(settings)
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        created = client.post("/v1/workflows", json={"name": "round-trips", "definition": WORKFLOW})
        assert created.status_code == 201, created.get_data(as_text=True)
        path = f"/v1/workflows/{created.get_json()['workflow_id']}/runs"

        def submit() -> str:
            answer = client.post(path, json={"inputs": {"ticket": " hello "}})
            assert answer.status_code == 202, answer.get_data(as_text=True)
            return str(answer.get_json()["run_id"])

        run_ids: list[str] = []

        def poll() -> None:
            answer = client.get(f"/v1/runs/{run_ids[0]}")
            assert answer.status_code == 200, answer.get_data(as_text=True)

        with tempfile.TemporaryDirectory(prefix="relayflow-rt-") as workdir:
            tracer = LibpqTracer(Path(workdir))
            from api.runtime import runtime

            with app.app_context():
                tracer.watch(runtime().store.catalog.engine)  # the engine the views use
            tracer.start()  # traced warm-up: the tracer learns psycopg's prepared statement names
            for _ in range(8):
                run_ids.append(submit())
                poll()
            tracer.stop()
            result: dict[str, Any] = {}
            for name, request in (("submit", submit), ("poll", poll)):
                traces = []
                for _ in range(requests):
                    traces.append(_traced(tracer, request))
                    time.sleep(0.005)
                kinds: dict[str, float] = {}
                for trace in traces:
                    for kind, n in trace["by_kind"].items():
                        kinds[kind] = kinds.get(kind, 0) + n / requests
                result[name] = {"round_trips_mean": round(sum(t["round_trips"] for t in traces) / requests, 3),
                                "round_trips_max": max(t["round_trips"] for t in traces),
                                "statements_mean": round(sum(t["statements"] for t in traces) / requests, 3),
                                "by_kind": {k: round(v, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}}
            tracer.unwatch()
        return result
    finally:
        from engine import db

        for engine in list(db._engines.values()):
            engine.dispose()
        drop_database(admin_url)
        flush_redis(redis_url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50, help="submits, then polls, traced one by one (default 50)")
    args = parser.parse_args(argv)
    print(f"database {DB_NAME}, Redis db {REDIS_DB}", file=sys.stderr)
    print(json.dumps(measure(args.requests), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
