"""The request path in `run_all.py`'s sitting: bench/api_latency.py's limit comparator, run as its
own process (it starts its own web servers and database) once the node phases are over.

Its database is `<BENCH_DB_NAME>_api`, so it never touches the sitting's; the Redis database is the
sitting's (flushed by it before and after: every node phase has ended by then).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.harness import DB_NAME, REDIS_DB, ROOT, BenchError


def run_limit_comparison(quick: bool, log_dir: Path, timeout_s: float = 300.0) -> dict[str, Any]:
    """Relayflow's poll against the bare limit app: p50 with one client, requests/s with 50."""
    command = [sys.executable, str(ROOT / "bench" / "api_latency.py"), "--no-drive"]
    if quick:
        command += ["--limit-duration-s", "2", "--limit-rounds", "1"]
    env = {**os.environ, "BENCH_DB_NAME": f"{DB_NAME}_api", "BENCH_REDIS_DB": str(REDIS_DB),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = log_dir / "api_latency.log"
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"bench/api_latency.py did not finish within {timeout_s:.0f}s") from exc
    log.write_text(done.stdout + done.stderr)
    paths = [line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("results:")]
    if done.returncode != 0 or not paths:
        raise BenchError(f"bench/api_latency.py failed (exit {done.returncode}); see {log}")
    result = json.loads((ROOT / paths[-1]).read_text())  # relative to the checkout (or absolute)
    summary: dict[str, Any] = result["limit"]["summary"]
    return {**summary, "results_file": paths[-1]}
