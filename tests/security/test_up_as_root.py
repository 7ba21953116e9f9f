"""`relayflow up` run for real as root: it prints no server password, and every process it starts
(web, workers with their reconcilers, the fake LLM provider) runs as the unprivileged service
user; its private files stay private."""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from engine.settings import Settings
from tests.conftest import ROOT, free_port, settings_env

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400),
              pytest.mark.skipif(os.geteuid() != 0, reason="runs `relayflow up` as root")]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data folder outside /tmp/pytest-of-root (0700, reset by every session)."""
    path = Path(tempfile.mkdtemp(prefix="relayflow-up-root-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _up(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "api.cli", "up", "--port", str(port), "--workers", "1", *args],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while "Serving" not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.3)
    return proc


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        assert proc.wait(timeout=90) == 0, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _started_by(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


def _private_to_root(path: Path) -> bool:
    info = path.stat()
    return info.st_uid == 0 and stat.S_IMODE(info.st_mode) & 0o077 == 0


def test_up_as_root_runs_web_workers_and_fake_provider_unprivileged(settings: Settings, data_dir: Path) -> None:
    env = {**settings_env(settings), "RELAYFLOW_DATA_DIR": str(data_dir)}
    log = data_dir / "up.log"
    # When root runs `relayflow up --demo` (on the test's PostgreSQL and Redis)
    proc = _up(env, log, "--demo")
    try:
        children = _started_by(proc)
        by_kind = {kind: [c for c in children if kind in " ".join(c.cmdline())]
                   for kind in ("gunicorn", "dramatiq", "api.localstack.fake_llm")}
        # Then the web server, the workers (and their worker processes) and the fake provider run unprivileged
        assert all(by_kind.values()), {c.pid: c.cmdline() for c in children}
        for kind, found in by_kind.items():
            for child in found:
                uids = child.uids()
                assert uids.real != 0 and uids.effective != 0 and uids.saved != 0, (kind, child.cmdline(), uids)
        assert "run as relayflow" in log.read_text()
        # And the demo runs were served by them (the fake provider included)
        assert "succeeded" in log.read_text().lower()
        # And the token file and the logs are root's alone
        assert _private_to_root(data_dir / "token") and _private_to_root(data_dir / "logs")
    finally:
        _stop(proc, log)


def test_up_prints_no_server_password_and_keeps_them_in_a_private_file(settings: Settings, data_dir: Path) -> None:
    env = {k: v for k, v in settings_env(settings).items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["RELAYFLOW_DATA_DIR"] = str(data_dir)
    log = data_dir / "up.log"
    # When `relayflow up` starts embedded PostgreSQL and Redis
    proc = _up(env, log)
    try:
        state = json.loads((data_dir / "embedded.json").read_text())
        passwords = [state["postgres_password"], state["redis_password"]]
        printed = log.read_text(errors="replace")
        # Then neither password is printed (masked in the URLs it shows), nor in any log of its processes
        assert "DATABASE_URL=postgresql+psycopg://relayflow:***@127.0.0.1" in printed.replace("\n", "")
        texts = [printed] + [p.read_text(errors="replace") for p in data_dir.rglob("*.log")]
        for text in texts:
            for password in passwords:
                assert password not in text
        # And the file holding them is root's alone, yet the CLI finds the servers by itself
        assert _private_to_root(data_dir / "embedded.json")
        listed = subprocess.run([sys.executable, "-m", "api.cli", "tokens", "list"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0 and "local" in listed.stdout, listed.stdout + listed.stderr
        for password in passwords:
            assert password not in listed.stdout + listed.stderr
    finally:
        _stop(proc, log)
