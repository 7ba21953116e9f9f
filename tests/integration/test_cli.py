"""The `relayflow` command end to end: `up` serves the API with workers on the configured
servers, `run` registers a workflow, shows progress and exits by outcome, `status` reports;
`up` restarts a worker group whose process was killed."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from engine.settings import Settings
from tests.conftest import ROOT, settings_env, wait_for

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Stack:
    """A running `relayflow up`: its URL, the environment for client commands, its process and output."""

    url: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    """`relayflow up` on this test's database and Redis (one worker process)."""
    port = _free_port()
    env = {**settings_env(settings), "RELAYFLOW_DATA_DIR": str(tmp_path / "data")}
    log = open(tmp_path / "up.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "up", "--port", str(port), "--workers", "1"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "Serving" not in (tmp_path / "up.log").read_text():
            assert proc.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(0.2)
        token = (tmp_path / "data" / "token").read_text().strip()
        yield Stack(f"http://127.0.0.1:{port}",
                    {**env, "RELAYFLOW_URL": f"http://127.0.0.1:{port}", "RELAYFLOW_TOKEN": token},
                    proc, tmp_path / "up.log")
        # Then Ctrl-C stops it cleanly
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0, (tmp_path / "up.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_run_command_succeeds_and_fails_with_the_run(stack: Stack, tmp_path: Path) -> None:
    env = stack.env
    ok = _cli(env, "run", "examples/ticket-triage.yaml", "-i", "ticket=the site is down 🔥", "-i", "priority=5")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PAGE on-call: the site is down 🔥" in ok.stdout
    run_id = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", ok.stdout)
    assert run_id is not None
    assert _cli(env, "status", run_id.group(0)).returncode == 0

    failing = tmp_path / "failing.yaml"
    failing.write_text("nodes:\n  - id: boom\n    type: code\n    config:\n      code: |\n"
                       "        def main(inputs):\n            raise ValueError('no luck')\n")
    failed = _cli(env, "run", str(failing))
    assert failed.returncode == 1
    assert "boom" in failed.stdout and "no luck" in failed.stdout

    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("nodes:\n  - id: x\n    type: teleport\n")
    refused = _cli(env, "run", str(invalid))
    assert refused.returncode == 1
    assert "teleport" in refused.stdout + refused.stderr

    # and `up` gave the web server and the workers one metrics folder: the web's /metrics counts
    # what the worker processes did
    assert (Path(env["RELAYFLOW_DATA_DIR"]) / "metrics").is_dir()
    scraped = httpx.get(f"{stack.url}/metrics", timeout=30).text
    assert re.search(r'^relayflow_node_attempts_total\{outcome="failed",type="code"\} [1-9]', scraped, re.M), scraped
    assert re.search(r'^relayflow_runs_ended_total\{status="succeeded"\} [1-9]', scraped, re.M), scraped


def _worker_group(up: subprocess.Popen[bytes]) -> psutil.Process | None:
    """The `dramatiq workers` main process `up` runs (None between a death and its restart)."""
    for child in psutil.Process(up.pid).children():
        try:
            if "api.cli.dramatiq_main" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                return child
        except psutil.NoSuchProcess:
            continue
    return None


@pytest.mark.timeout(300)
def test_up_restarts_a_worker_group_whose_process_was_killed(stack: Stack) -> None:
    # Given `relayflow up` serving with its worker group, and a run in flight (a node sleeping 10 s)
    group = wait_for(lambda: (g := _worker_group(stack.proc)) and g.children() and g, timeout_s=60)
    headers = {"Authorization": f"Bearer {stack.env['RELAYFLOW_TOKEN']}"}
    with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as http:
        created = http.post("/v1/workflows", json={"name": "nap", "definition": {
            "nodes": [{"id": "nap", "type": "sleep", "config": {"seconds": 10}}],
            "outputs": {"slept": "{{ nap.slept_s }}"}}})
        assert created.status_code == 201, created.text
        in_flight = http.post(f"/v1/workflows/{created.json()['workflow_id']}/runs", json={"inputs": {}})
        assert in_flight.status_code == 202, in_flight.text
        run_id = in_flight.json()["run_id"]
        wait_for(lambda: http.get(f"/v1/runs/{run_id}").json()["status"] == "running", timeout_s=30)

        # When one of its worker processes, up for a while, is killed with SIGKILL. (Dramatiq's main
        # process waits on each new worker's multiprocessing.Event before it watches them, and the
        # worker sets it only after it starts consuming (on a loaded machine, with LiteLLM's import
        # beside it, seconds after): a worker killed before that leaves the main process waiting
        # 30 s (dramatiq's --worker-fork-timeout), and one killed inside set() can block it on the
        # event's lock for good. A crash in service comes later; so does this kill.)
        worker = group.children()[0]
        wait_for(lambda: time.time() - worker.create_time() > 5, timeout_s=30)
        os.kill(worker.pid, signal.SIGKILL)

        # Then `up` says so in one line naming how the group ended, and runs a new worker group
        wait_for(lambda: re.search(r"worker exited \(exit status \d+\).*restarting it in 1 s",
                                   stack.log.read_text()), timeout_s=60)
        wait_for(lambda: (g := _worker_group(stack.proc)) and g.pid != group.pid and g.children(), timeout_s=60)
        assert stack.proc.poll() is None
        # And the run in flight ends well (its lease expires, the reconciler queues it again)
        wait_for(lambda: http.get(f"/v1/runs/{run_id}").json()["status"] in ("succeeded", "failed"), timeout_s=90)
        assert http.get(f"/v1/runs/{run_id}").json()["status"] == "succeeded"
    # And a run submitted afterwards succeeds
    ok = _cli(stack.env, "run", "examples/ticket-triage.yaml", "-i", "ticket=after the restart", "-i", "priority=1")
    assert ok.returncode == 0, ok.stdout + ok.stderr
