"""Processes refuse to start on settings that contradict each other, with one clear message."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, settings_env

pytestmark = pytest.mark.integration

MESSAGE = "RELAYFLOW_LEASE_RENEW_EVERY_S=10.0 must be at most half of RELAYFLOW_LEASE_S=5.0"
# the defect's settings: a 5 s lease with the default 10 s renewal interval
CONTRADICTION = {"RELAYFLOW_LEASE_S": "5", "RELAYFLOW_LEASE_RENEW_EVERY_S": "10"}


def test_a_dramatiq_worker_with_a_lease_shorter_than_two_renewals_exits_naming_both(
        start_worker: Any, tmp_path: Path) -> None:
    # Given a real `dramatiq workers` process group started with contradictory settings
    worker = start_worker(processes=2, threads=1, env=CONTRADICTION)
    # Then it exits non-zero on its own, and its output holds the message, not a traceback
    assert worker.proc.wait(timeout=60) != 0
    output = worker.log_path.read_text()
    assert MESSAGE in output
    assert "Traceback" not in output


def test_relayflow_worker_with_contradictory_settings_exits_naming_both(settings: Any) -> None:
    # When `relayflow worker` starts with the defect's settings
    done = subprocess.run([sys.executable, "-m", "api.cli", "worker", "--processes", "1"], cwd=ROOT,
                          env=settings_env(settings) | CONTRADICTION, capture_output=True, text=True, timeout=60)
    # Then it stops before starting any worker, with the message naming both variables
    assert done.returncode == 1
    assert MESSAGE in done.stderr
    assert "Traceback" not in done.stderr
