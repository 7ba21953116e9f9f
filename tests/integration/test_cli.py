"""The `relayflow` command end to end: `up` serves the API with workers on the configured
servers, `run` registers a workflow, shows progress and exits by outcome, `status` reports."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from engine.settings import Settings
from tests.conftest import ROOT, settings_env

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`relayflow up` on this test's database and Redis; yields (url, env for client commands)."""
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
        yield f"http://127.0.0.1:{port}", {**env, "RELAYFLOW_URL": f"http://127.0.0.1:{port}", "RELAYFLOW_TOKEN": token}
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


def test_run_command_succeeds_and_fails_with_the_run(stack: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    _url, env = stack
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
