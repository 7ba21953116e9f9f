#!/usr/bin/env python
"""The first LLM node of a fresh worker: its time over the provider's own, `python bench/first_llm.py`.

For each mode (`warm`: as shipped, each worker process imports LiteLLM and builds its Router at
start, in a background thread; `cold`: RELAYFLOW_WORKER_WARM_LLM=false, the first LLM node pays
it), on a fresh benchmark database (bench/harness.py: `RELAYFLOW_BENCH_DB`, Redis database
`RELAYFLOW_BENCH_REDIS_DB`): start the fake OpenAI provider (api/localstack/fake_llm.py) with
`--provider-delay-s` of latency, a model file pointing at it, and a fresh
`dramatiq workers --processes 2 --threads 8` group; as soon as the group says it is ready (warm:
every process logged `worker.llm_warm`; cold: Dramatiq's "ready for action"), submit a
one-LLM-node workflow (in this process, through the API's service) and wait for it; then a second
run, warm in both modes. Reported per run: submit → node finished (the node row's
`finished_at`), the provider's latency (the same request sent straight to the fake provider,
median of 5), and their difference, the overhead; plus how long the worker took from its start
to ready. Target: the first node's overhead under 0.5 s (warm mode).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import yaml  # noqa: E402

from api.localstack.fake_llm import FakeLLM  # noqa: E402
from bench.harness import (  # noqa: E402
    DB_NAME,
    PROCESSES,
    REDIS_DB,
    WARM_MARKER,
    BenchError,
    WorkerGroup,
    drop_database,
    flush_redis,
    fresh_database,
    server_urls,
    worker_env,
)

WORKFLOW = {"inputs": {"topic": {"type": "string", "required": True}},
            "nodes": [{"id": "ask", "type": "llm", "config": {"model": "bench-fake",
                                                                "prompt": "Say something about {{ inputs.topic }}."}}],
            "outputs": {"text": "{{ ask.text }}"}}


def _wait_log(group: WorkerGroup, marker: bytes, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while group.log_path.read_bytes().count(marker) < count:
        group.check()
        if time.monotonic() > deadline:
            raise BenchError(f"no {marker.decode()!r} x{count} within {timeout_s:.0f}s; see {group.log_path}")
        time.sleep(0.01)


def _provider_latency_s(fake: FakeLLM, upstream: str) -> float:
    """The fake provider's own answer time for the node's request (median of 5, over keep-alive)."""
    body = {"model": upstream, "messages": [{"role": "user", "content": "Say something about benchmarks."}]}
    times = []
    with httpx.Client(base_url=fake.base_url, headers={"Authorization": "Bearer sk-bench"}) as http:
        for _ in range(5):
            began = time.perf_counter()
            http.post("/chat/completions", json=body).raise_for_status()
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def _one_run(service: Any, store: Any, workflow_id: str, space: str) -> dict[str, Any]:
    """Submit, wait for the end; submit → node finished, from the database's own clock."""
    import uuid

    submitted_at = datetime.now(UTC)
    run_id = service.submit_run(space, workflow_id, {"topic": "benchmarks"})["run_id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = store.views.run_with_nodes(uuid.UUID(run_id), None)
        if found and found[0]["status"] in ("succeeded", "failed", "cancelled"):
            run, nodes = found
            if run["status"] != "succeeded":
                raise BenchError(f"run {run_id} {run['status']}: {run['error']}")
            node = nodes[0]
            return {"run_id": run_id, "submit_to_node_finished_s": round((node["finished_at"] - submitted_at).total_seconds(), 3),
                    "node_running_s": round((node["finished_at"] - node["started_at"]).total_seconds(), 3)}
        time.sleep(0.005)
    raise BenchError(f"run {run_id} did not finish within 120 s")


def measure(mode: str, provider_delay_s: float, log_dir: Path) -> dict[str, Any]:
    """One mode on a fresh database and a fresh worker group."""
    from engine.db import get_engine
    from engine.dispatch import DramatiqDispatcher, make_broker
    from engine.service import Relayflow
    from engine.settings import Settings
    from engine.store import Store
    from engine.tokens import DEFAULT_SPACE

    admin_url, bench_url, redis_url = server_urls()
    flush_redis(redis_url)
    fresh_database(admin_url, bench_url)
    fake = FakeLLM().start()
    queue = f"bench_first_llm_{mode}"
    upstream = f"echo+delay={provider_delay_s}" if provider_delay_s > 0 else "echo"
    try:
        model_dir = Path(tempfile.mkdtemp(prefix="relayflow-first-llm-"))
        (model_dir / "bench-fake.yaml").write_text(yaml.safe_dump({
            "id": "bench-fake", "name": "Bench fake", "meta": {"protocol": "openai", "conn_config": {
                "base_url": fake.base_url, "api_key": "sk-bench", "model": upstream, "timeout": "30s"}}}))
        settings = Settings(database_url=bench_url, redis_url=redis_url, queue_name=queue, model_dir=model_dir)
        store = Store.from_engine(get_engine(settings))
        store.catalog.ensure_space(DEFAULT_SPACE, "Default space")
        service = Relayflow(store, DramatiqDispatcher(make_broker(settings), queue), settings)
        workflow_id = service.create_workflow(DEFAULT_SPACE, "first-llm", None, WORKFLOW)["workflow_id"]
        provider_s = _provider_latency_s(fake, upstream)
        env = worker_env(bench_url, redis_url, queue, 0) | {
            "RELAYFLOW_MODEL_DIR": str(model_dir), "RELAYFLOW_WORKER_WARM_LLM": "true" if mode == "warm" else "false"}
        began = time.monotonic()
        with WorkerGroup(f"first_llm_{mode}", "workers", env, log_dir) as group:  # waits for "ready for action"
            ready_for_action_s = time.monotonic() - began
            if mode == "warm":
                _wait_log(group, WARM_MARKER, PROCESSES, 180.0)
            ready_s = time.monotonic() - began
            first = _one_run(service, store, workflow_id, DEFAULT_SPACE)
            second = _one_run(service, store, workflow_id, DEFAULT_SPACE)
        for run in (first, second):
            run["overhead_s"] = round(run["submit_to_node_finished_s"] - provider_s, 3)
        return {"mode": mode, "worker_ready_for_action_s": round(ready_for_action_s, 2),
                "worker_ready_s": round(ready_s, 2), "provider_latency_s": round(provider_s, 4),
                "first_run": first, "second_run": second}
    finally:
        fake.stop()
        from engine import db

        for engine in list(db._engines.values()):
            engine.dispose()
        db._engines.clear()
        drop_database(admin_url)
        flush_redis(redis_url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--modes", default="warm,cold", help="warm, cold or both (default warm,cold)")
    parser.add_argument("--provider-delay-s", type=float, default=0.2, help="the fake provider's latency, default 0.2")
    args = parser.parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="relayflow-first-llm-logs-"))
    print(f"database {DB_NAME}, Redis db {REDIS_DB}, logs in {log_dir}", file=sys.stderr)
    results = {"command": " ".join(["python", "bench/first_llm.py", *(argv if argv is not None else sys.argv[1:])]),
               "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
               "modes": [measure(mode.strip(), args.provider_delay_s, log_dir) for mode in args.modes.split(",")]}
    print(json.dumps(results, indent=2))
    for result in results["modes"]:
        print(f"{result['mode']}: worker ready after {result['worker_ready_s']} s; first LLM node overhead "
              f"{result['first_run']['overhead_s']} s over the provider's {result['provider_latency_s']} s "
              f"(second run {result['second_run']['overhead_s']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
