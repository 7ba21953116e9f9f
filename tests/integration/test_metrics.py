"""`GET /metrics`: Prometheus text adding up every web and worker process of the host.

Real gunicorn web processes and real Dramatiq worker processes share one PROMETHEUS_MULTIPROC_DIR,
as `relayflow up` sets it; the scrape is parsed with prometheus_client's own parser.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.localstack.fake_llm import FakeLLM
from tests.conftest import ApiHelper, free_port, wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

PRICED = {"input_per_million": "1000", "output_per_million": "3000", "cached_input_per_million": "250"}
SLOPPY = {"input_per_million": "2000", "output_per_million": "4000"}
ASK = {"nodes": [{"id": "ask", "type": "llm", "config": {"model": "priced", "prompt": "Tell me about otters [[fault: cached=3]]",
                                                          "stream": False}}],
       "outputs": {"text": "{{ ask.text }}"}}
JUDGE = {"nodes": [{"id": "judge", "type": "llm", "outputs": {"verdict": "string"},
                    "config": {"model": "sloppy", "prompt": "Judge otters", "output_format": "json"},
                    "retry": {"max_attempts": 2, "backoff_s": 0.1}, "on_error": "default",
                    "default_output": {"verdict": "unknown"}}],
         "outputs": {"verdict": "{{ judge.verdict }}"}}
SLOW = {"nodes": [{"id": "ask", "type": "llm", "config": {"model": "slow", "prompt": "Take your time", "stream": False}}],
        "outputs": {"text": "{{ ask.text }}"}}
QUESTION = {"nodes": [{"id": "ask", "type": "question",
                       "config": {"question": "Refund?", "answer_type": "option", "options": ["yes", "no"]}}],
            "outputs": {"answer": "{{ ask.answer }}"}}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of a scrape, by (name, labels)."""
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value (0 if absent: a counter not incremented yet is not exported)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def priced(usage: dict[str, Any], prices: dict[str, str]) -> Decimal:
    cached = usage.get("cached_input_tokens", 0)
    cached_price = Decimal(prices.get("cached_input_per_million", prices["input_per_million"]))
    return ((usage["input_tokens"] - cached) * Decimal(prices["input_per_million"]) + cached * cached_price
            + usage["output_tokens"] * Decimal(prices["output_per_million"])) / Decimal(1_000_000)


@pytest.fixture
def multiproc_dir(tmp_path: Path) -> Iterator[dict[str, str]]:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    yield {"PROMETHEUS_MULTIPROC_DIR": str(folder)}


def test_metrics_add_up_every_web_and_worker_process(client: Any, token: str, fake_llm: FakeLLM, write_model: Any,
                                                     start_web: Any, start_worker: Any,
                                                     multiproc_dir: dict[str, str]) -> None:
    # Given two gunicorn workers and two worker processes sharing one metrics folder, the worker
    # host also exporting on its own port, and priced models
    write_model("priced", "echo", pricing=PRICED)
    write_model("sloppy", "bad_json", pricing=SLOPPY)
    write_model("slow", "delay=20", timeout="30s")
    assert client.post("/v1/models/refresh").status_code == 200
    web = start_web(env=multiproc_dir, workers=2)
    exporter = free_port()
    start_worker(processes=2, threads=2, env={**multiproc_dir, "RELAYFLOW_METRICS_PORT": str(exporter)})
    with httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        def create(definition: dict[str, Any]) -> str:
            response = http.post("/v1/workflows", json={"name": "wf", "definition": definition})
            assert response.status_code == 201, response.text
            return str(response.json()["workflow_id"])

        def finished(run_id: str) -> dict[str, Any]:
            return wait_for(lambda: (r := http.get(f"/v1/runs/{run_id}").json())["status"] in
                            ("succeeded", "failed") and r, timeout_s=60)

        # When an LLM run and a run whose node is retried are submitted through the web
        ask_id, judge_id, slow_id = create(ASK), create(JUDGE), create(SLOW)
        runs = [http.post(f"/v1/workflows/{wf}/runs", json={"inputs": {}}).json()["run_id"] for wf in (ask_id, judge_id)]
        asked, judged = finished(runs[0]), finished(runs[1])
        assert asked["status"] == judged["status"] == "succeeded", (asked, judged)
        s = wait_for(lambda: (found := scrape(f"{web.url}/metrics"))
                     and value(found, "relayflow_runs_ended_total", status="succeeded") == 2 and found, timeout_s=20)

        # Then the web side counted the runs it started and the requests it answered
        assert value(s, "relayflow_runs_started_total", mode="async") == 2
        assert value(s, "relayflow_http_requests_total", route="/v1/workflows/<workflow_id>/runs",
                     method="POST", status="202") == 2
        # And the worker side (either of its processes) counted attempts, durations, retries and the ends
        ask_usage = asked["nodes"][0]["usage"]
        failed = [e for e in judged["nodes"][0]["attempt_errors"] if e.get("usage")]
        assert len(failed) == 2, judged["nodes"][0]["attempt_errors"]
        assert value(s, "relayflow_node_attempts_total", type="llm", outcome="succeeded") == 1
        assert value(s, "relayflow_node_attempts_total", type="llm", outcome="failed") == 2
        assert value(s, "relayflow_node_retries_total", type="llm") == 1
        assert value(s, "relayflow_node_attempt_duration_seconds_count", type="llm") == 3
        assert value(s, "relayflow_node_attempt_duration_seconds_sum", type="llm") > 0
        assert value(s, "relayflow_llm_request_duration_seconds_count", model="priced", outcome="answered") == 1
        # tokens and cost by model: the fake provider's usage times the declared prices
        assert value(s, "relayflow_llm_tokens_total", model="priced", direction="input") == ask_usage["input_tokens"]
        assert value(s, "relayflow_llm_tokens_total", model="priced", direction="cached_input") == 3
        assert value(s, "relayflow_llm_tokens_total", model="sloppy", direction="output") == sum(
            e["usage"]["output_tokens"] for e in failed)
        assert value(s, "relayflow_llm_cost_usd_total", model="priced") == pytest.approx(
            float(priced(ask_usage, PRICED)))
        assert value(s, "relayflow_llm_cost_usd_total", model="sloppy") == pytest.approx(
            float(sum((priced(e["usage"], SLOPPY) for e in failed), Decimal(0))))
        # and the queue gauges are read from Postgres at scrape time
        assert ("relayflow_queue_depth", frozenset()) in s and ("relayflow_queue_oldest_age_seconds", frozenset()) in s
        # And the worker host's own exporter shows the same totals (web processes' too: one folder)
        exported = scrape(f"http://127.0.0.1:{exporter}/metrics")
        assert value(exported, "relayflow_node_attempts_total", type="llm", outcome="failed") == 2
        assert value(exported, "relayflow_runs_started_total", mode="async") == 2

        # When an event stream follows a running run, the open-streams gauge counts it until it ends
        slow = http.post(f"/v1/workflows/{slow_id}/runs", json={"inputs": {}}).json()["run_id"]
        wait_for(lambda: http.get(f"/v1/runs/{slow}").json()["nodes"][0]["status"] == "running", timeout_s=30)
        with http.stream("GET", f"/v1/runs/{slow}/events") as events:
            lines = events.iter_lines()  # one iterator, kept: a dropped one closes the connection
            assert next(lines).startswith("retry:")
            wait_for(lambda: value(scrape(f"{web.url}/metrics"), "relayflow_event_streams_open") == 1, timeout_s=20)
            assert http.post(f"/v1/runs/{slow}/cancel").status_code == 202
            assert "event: run.cancelled" in list(lines)  # then the stream ends
        wait_for(lambda: value(scrape(f"{web.url}/metrics"), "relayflow_event_streams_open") == 0, timeout_s=20)
        ended = scrape(f"{web.url}/metrics")
        assert value(ended, "relayflow_runs_ended_total", status="cancelled") == 1


def test_without_a_multiprocess_folder_a_process_shows_its_own_series(api: ApiHelper, client: Any) -> None:
    # Given the in-process app (no PROMETHEUS_MULTIPROC_DIR), When a run is submitted
    before = value(_own(client), "relayflow_runs_started_total", mode="async")
    workflow_id = api.create_workflow(QUESTION)
    api.submit(workflow_id, {})
    # Then this process's scrape counted it, without a token
    after = _own(client)
    assert value(after, "relayflow_runs_started_total", mode="async") == before + 1
    assert ("relayflow_queue_depth", frozenset()) in after


def _own(client: Any) -> Samples:
    response = client.get("/metrics", headers={"Authorization": ""})
    assert response.status_code == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.get_data(as_text=True)) for s in family.samples}


def _children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_a_killed_web_process_stops_counting_its_open_streams(api: ApiHelper, token: str, start_web: Any,
                                                              multiproc_dir: dict[str, str]) -> None:
    # Given a stream open on a queued run (no worker runs it) through a web process
    web = start_web(env=multiproc_dir, workers=2)
    run_id = api.submit(api.create_workflow(QUESTION), {})
    with httpx.Client(base_url=web.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        with http.stream("GET", f"/v1/runs/{run_id}/events") as events:
            lines = events.iter_lines()
            assert next(lines).startswith("retry:")
            wait_for(lambda: value(scrape(f"{web.url}/metrics"), "relayflow_event_streams_open") == 1, timeout_s=20)
            # When every gunicorn worker process is killed (SIGKILL: nothing of ours runs on the way out)
            workers = _children(web.proc.pid)
            assert len(workers) == 2
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            with pytest.raises(httpx.HTTPError):
                list(lines)
    # Then the master's child_exit drops their live gauges: the new workers report no open stream,
    # while the counters the dead processes wrote stay counted
    after = wait_for(lambda: (s := scrape(f"{web.url}/metrics"))
                     and value(s, "relayflow_event_streams_open") == 0 and s, timeout_s=30)
    assert value(after, "relayflow_http_requests_total", route="/v1/runs/<run_id>/events", method="GET",
                 status="200") == 1
