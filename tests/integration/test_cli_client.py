"""The `relayflow` client commands end to end, as subprocesses against a real gunicorn and real
workers: `submit` (async and --sync), `watch` (driven by the event stream), `resume`, `cancel`."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.settings import Settings
from tests.conftest import ROOT, ApiHelper, _reachable, free_port, settings_env, wait_for

pytestmark = pytest.mark.integration

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
STEPS = {"nodes": [
    {"id": "first", "type": "sleep", "config": {"seconds": 0.3}},
    {"id": "second", "type": "sleep", "after": ["first"], "config": {"seconds": 0.3}},
    {"id": "third", "type": "template", "after": ["second"], "config": {"template": "all {{ inputs.word }}"}},
], "inputs": {"word": {"type": "string", "required": True}}, "outputs": {"text": "{{ third.text }}"}}
FAILING = {"nodes": [{"id": "boom", "type": "code",
                      "config": {"code": "def main(inputs):\n    raise ValueError('no luck')\n"}}]}
APPROVAL = {
    "nodes": [
        {"id": "ask", "type": "question",
         "config": {"question": "Approve the refund?", "answer_type": "option", "options": ["yes", "no"]}},
        {"id": "form", "type": "input", "after": ["ask"],
         "config": {"prompt": "Details for the {{ ask.answer }} answer",
                    "schema": {"type": "object", "required": ["reason", "score"],
                               "properties": {"reason": {"type": "string", "minLength": 3},
                                              "score": {"type": "integer", "minimum": 1, "maximum": 5}}}}},
        {"id": "done", "type": "template", "config": {"template": "{{ ask.answer }}/{{ form.reason }}/{{ form.score }}"}},
    ],
    "outputs": {"summary": "{{ done.text }}"},
}


def _env(settings: Settings, url: str, token: str) -> dict[str, str]:
    return {**settings_env(settings), "RELAYFLOW_URL": url, "RELAYFLOW_TOKEN": token, "COLUMNS": "200"}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=90)


def _out(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


@pytest.fixture
def env(settings: Settings, web_server: str, token: str) -> dict[str, str]:
    """Environment for client commands talking to the real web server."""
    return _env(settings, web_server, token)


def test_submit_prints_the_run_id_and_sync_exits_by_the_outcome(env: dict[str, str], api: ApiHelper,
                                                                 start_worker: Any) -> None:
    start_worker()
    steps, failing = api.create_workflow(STEPS), api.create_workflow(FAILING)
    # async: the run id at once
    queued = _cli(env, "submit", steps, "-i", "word=done")
    assert queued.returncode == 0, _out(queued)
    run_id = UUID.search(queued.stdout)
    assert run_id is not None and "queued" in queued.stdout
    assert api.wait(run_id.group(0))["outputs"] == {"text": "all done"}
    # --sync: the outputs, exit 0
    synced = _cli(env, "submit", steps, "-i", "word=synced", "--sync", "--wait", "30")
    assert synced.returncode == 0, _out(synced)
    assert "succeeded" in synced.stdout and '"all synced"' in synced.stdout
    # --sync --json: the run object, for scripts
    as_json = _cli(env, "submit", steps, "-i", "word=json", "--sync", "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["outputs"] == {"text": "all json"}
    # a failing workflow exits 1 naming the node and its error
    failed = _cli(env, "submit", failing, "--sync")
    assert failed.returncode == 1
    assert "boom" in failed.stdout and "no luck" in failed.stdout
    # a missing input is refused naming the field
    refused = _cli(env, "submit", steps)
    assert refused.returncode == 1 and "word" in _out(refused)


def test_watch_follows_a_multi_node_run_from_its_event_stream(env: dict[str, str], api: ApiHelper,
                                                             start_worker: Any) -> None:
    # Given a run queued before any worker runs it
    run_id = api.submit(api.create_workflow(STEPS), {"word": "watched"})
    watcher = subprocess.Popen([sys.executable, "-m", "api.cli", "watch", run_id], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    # When a worker runs it
    start_worker()
    output, _ = watcher.communicate(timeout=60)
    # Then watch printed each event as it came, the final table and the outputs, and exited 0
    assert watcher.returncode == 0, output
    for node in ("first", "second", "third"):
        assert f"node.started {node}" in output and f"node.succeeded {node}" in output
        assert node in output.split("run.succeeded")[-1]  # in the final table
    assert output.count("node.started first") == 1
    assert "succeeded" in output and "all watched" in output


BATCH = {"inputs": {"words": {"type": "array", "required": True}},
         "nodes": [{"id": "each", "type": "batch",
                    "config": {"items": "{{ inputs.words }}", "concurrency": 2,
                               "nodes": [{"id": "nap", "type": "sleep", "config": {"seconds": 0.2}},
                                         {"id": "up", "type": "template", "after": ["nap"],
                                          "config": {"template": "{{ item | upper }}"}}],
                               "outputs": {"word": "{{ up.text }}"}}},
                   {"id": "joined", "type": "template", "config": {"template": "{{ each.word | join(' ') }}"}}],
         "outputs": {"text": "{{ joined.text }}"}}


def test_watch_shows_a_batch_as_one_row_with_its_progress(env: dict[str, str], api: ApiHelper,
                                                          start_worker: Any) -> None:
    # Given a run whose batch node maps a two-node body over five words, two at a time
    start_worker()
    run_id = api.submit(api.create_workflow(BATCH), {"words": ["a", "b", "c", "d", "e"]})
    # When a client watches it (not a terminal: one line per event, then the final table)
    watched = _cli(env, "watch", run_id)
    # Then each item's end showed as the batch's progress, and the final table has the batch as
    # one row (none for its body's nodes or its items' runs) with a full bar and 5/5
    assert watched.returncode == 0, _out(watched)
    out = watched.stdout
    assert "node.progress each 1/5" in out and "node.progress each 4/5" in out
    table = out.split("run.succeeded")[-1]
    rows = [line for line in table.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["each", "joined"], table
    assert "progress" in table and "5/5" in rows[0] and "━" * 10 in rows[0]
    assert "5/5" not in rows[1]
    assert '"A B C D E"' in out


def test_watch_reconnects_when_the_server_closes_the_stream(settings: Settings, token: str, api: ApiHelper,
                                                             start_worker: Any, tmp_path: Path) -> None:
    # Given a web server that closes every event stream after 0.4 s (as a proxy or sse_max_s would)
    from api.cli.supervisor import web_command

    port = free_port()
    server_env = {**settings_env(settings), "RELAYFLOW_SSE_MAX_S": "0.4"}
    with open(tmp_path / "short-web.log", "ab") as log:
        server = subprocess.Popen(web_command(port, control_socket=False), cwd=ROOT, env=server_env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _reachable("127.0.0.1", port), timeout_s=30)
        start_worker()
        run_id = api.submit(api.create_workflow(STEPS), {"word": "again"})
        # When a client watches the whole run
        watched = _cli(_env(settings, f"http://127.0.0.1:{port}", token), "watch", run_id)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=15)
    # Then it saw every event exactly once, across the reconnections
    assert watched.returncode == 0, _out(watched)
    for line in ("run.started", "node.started first", "node.succeeded second", "node.succeeded third",
                 "run.succeeded"):
        assert watched.stdout.count(line) == 1, watched.stdout


def test_a_question_then_a_form_are_shown_and_answered_from_the_command_line(
        env: dict[str, str], api: ApiHelper, start_worker: Any) -> None:
    start_worker()
    run_id = api.submit(api.create_workflow(APPROVAL))
    # watch stops at the question: exit 2, the question, its options and the command to answer it
    asked = _cli(env, "watch", run_id)
    assert asked.returncode == 2, _out(asked)
    event_id = api.run(run_id)["interrupt"]["event_id"]
    assert "Approve the refund?" in asked.stdout and "0. yes" in asked.stdout and "1. no" in asked.stdout
    assert f"relayflow resume {run_id} --event {event_id} yes" in asked.stdout
    # a text answer continues the run
    answered = _cli(env, "resume", run_id, "yes")
    assert answered.returncode == 0, _out(answered)
    assert event_id in answered.stdout and "ask" in answered.stdout
    wait_for(lambda: (api.run(run_id)["interrupt"] or {}).get("node_id") == "form")
    # then the form: its prompt, fields, and a --data command
    form = _cli(env, "watch", run_id)
    assert form.returncode == 2, _out(form)
    assert "Details for the yes answer" in form.stdout and "reason" in form.stdout and "score" in form.stdout
    assert "--data '{\"reason\": \"\", \"score\": 0}'" in form.stdout
    # a bad form is refused field by field, and the run keeps waiting
    bad = _cli(env, "resume", run_id, "--data", '{"reason": "ok", "score": 9}')
    assert bad.returncode == 1
    assert re.search(r"data\.reason: .*", bad.stdout) and re.search(r"data\.score: .*", bad.stdout), bad.stdout
    assert api.run(run_id)["status"] == "interrupted"
    not_json = _cli(env, "resume", run_id, "--data", "{reason")
    assert not_json.returncode != 0 and "JSON" in _out(not_json)
    # a good form, then follow the run to its end
    done = _cli(env, "resume", run_id, "--data", '{"reason": "broken", "score": 4}', "--watch")
    assert done.returncode == 0, _out(done)
    assert "yes/broken/4" in done.stdout and "run.succeeded" in done.stdout


def test_answering_the_same_question_twice_is_a_clear_conflict(env: dict[str, str], api: ApiHelper,
                                                               start_worker: Any) -> None:
    start_worker()
    run_id = api.submit(api.create_workflow(APPROVAL))
    event_id = api.wait(run_id, statuses=("interrupted",))["interrupt"]["event_id"]
    assert _cli(env, "resume", run_id, "--event", event_id, "--data", '{"option_index": 1}').returncode == 0
    again = _cli(env, "resume", run_id, "--event", event_id, "yes")
    assert again.returncode == 1
    assert "conflict" in again.stdout and f"Event {event_id} was already answered" in again.stdout
    assert api.node(api.run(run_id), "ask")["output"] == {"answer": "no", "option_index": 1}


def test_an_interrupted_run_is_cancelled_from_the_command_line(env: dict[str, str], api: ApiHelper,
                                                               start_worker: Any) -> None:
    start_worker()
    run_id = api.submit(api.create_workflow(APPROVAL))
    api.wait(run_id, statuses=("interrupted",))
    cancelled = _cli(env, "cancel", run_id)
    assert cancelled.returncode == 0, _out(cancelled)
    assert "cancelled" in cancelled.stdout
    assert api.run(run_id)["status"] == "cancelled"
    # watching it now ends at once with exit 1; cancelling again or answering it is refused clearly
    watched = _cli(env, "watch", run_id)
    assert watched.returncode == 1 and "run.cancelled" in watched.stdout
    again = _cli(env, "cancel", run_id)
    assert again.returncode == 1 and "already cancelled" in again.stdout
    late = _cli(env, "resume", run_id, "yes")
    assert late.returncode == 1 and "not waiting for input" in late.stdout
