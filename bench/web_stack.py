"""What the web benchmarks share (bench/api_latency.py, bench/streams.py): their common
arguments and result header, the real stack they start (gunicorn as `relayflow up` runs it,
`api.cli.supervisor.web_command`, and one `dramatiq workers` group), the submit-then-poll client
loop, its percentiles, and where the JSON results go."""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from api.cli.supervisor import Supervisor, child_env, web_command  # noqa: E402
from bench.harness import BenchError, WorkerGroup, worker_env  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WORKFLOW = {"inputs": {"ticket": {"type": "string", "required": True}},
            "nodes": [{"id": "clean", "type": "template", "config": {"template": "{{ inputs.ticket | trim }}"}},
                      {"id": "shout", "type": "template", "config": {"template": "{{ clean.text | upper }}"}}],
            "outputs": {"text": "{{ shout.text }}"}}
FINAL = {"succeeded", "failed", "cancelled"}


def add_web_args(parser: argparse.ArgumentParser, worker_class_help: str) -> None:
    """The arguments both web benchmarks take: polling pace and the gunicorn setup."""
    parser.add_argument("--poll-every-s", type=float, default=0.1, help="pause between polls of one run, default 0.1")
    parser.add_argument("--worker-class", default="gevent", choices=("gevent", "gthread"), help=worker_class_help)
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn processes, default 2")
    parser.add_argument("--web-threads", type=int, default=64, help="threads per process with gthread, default 64")


def result_header(script: str, argv: list[str] | None, setup: dict[str, Any]) -> dict[str, Any]:
    """The opening of a result: when, the command, the machine, and the setup measured."""
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", script, *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_at_start": os.getloadavg()},
        "setup": {**setup, "workers": "dramatiq workers --processes 2 --threads 8"},
    }


def save_result(res: dict[str, Any], prefix: str) -> Path:
    """Write the result under bench/results/ (the load average at the end added); its path."""
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{prefix}_{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    return path


def failed(exc: BenchError, log_dir: Path) -> int:
    """Say why the benchmark stopped and where its logs are; the exit code."""
    print(f"benchmark failed: {exc} (logs in {log_dir})", file=sys.stderr)
    return 1


def free_port() -> int:
    """A TCP port on loopback nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def web_stack(supervisor: Supervisor, port: int, bench_url: str, redis_url: str, queue: str,
              args: argparse.Namespace, connections: int = 2000) -> Iterator[tuple[Any, WorkerGroup]]:
    """gunicorn (as `--worker-class`, `--web-workers`, `--web-threads` say) and one worker group on
    `queue`, both answering; yields (the web child, the group). Raises BenchError if the web
    server died by the end."""
    env = {k: v for k, v in child_env(bench_url, redis_url).items() if not k.startswith("RELAYFLOW_")}
    env["RELAYFLOW_QUEUE_NAME"] = queue
    web = supervisor.spawn("web", web_command(port, workers=args.web_workers, worker_class=args.worker_class,
                                              threads=args.web_threads, connections=connections,
                                              control_socket=False), env)
    with WorkerGroup("workers", "workers", worker_env(bench_url, redis_url, queue, 0), supervisor.log_dir) as group:
        wait_http_ready(f"http://127.0.0.1:{port}", supervisor)
        yield web, group
        group.check()
    if supervisor.dead() is not None:
        raise BenchError("the web server died during the load")


@dataclass
class Tally:
    """What the clients measured (appended under one lock)."""

    submit_s: list[float] = field(default_factory=list)
    poll_s: list[float] = field(default_factory=list)
    run_s: list[float] = field(default_factory=list)      # submit sent → final status seen
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def percentiles_ms(values_s: list[float]) -> dict[str, Any]:
    """p50/p90/p99/max and mean in ms (nearest-rank percentiles)."""
    if not values_s:
        return {"n": 0}
    ordered = sorted(values_s)

    def rank(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, max(0, int(round(p * len(ordered) + 0.5)) - 1))], 2)

    return {"n": len(ordered), "p50_ms": rank(0.50), "p90_ms": rank(0.90), "p99_ms": rank(0.99),
            "max_ms": round(1000 * ordered[-1], 2), "mean_ms": round(1000 * sum(ordered) / len(ordered), 2)}


def wait_http_ready(base_url: str, supervisor: Supervisor, timeout_s: float = 60.0, path: str = "/healthz") -> None:
    """Poll `path` (/healthz) until the web server answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dead = supervisor.dead()
        if dead is not None:
            raise BenchError(f"{dead.name} exited: {dead.tail()}")
        try:
            if httpx.get(f"{base_url}{path}", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise BenchError(f"web server not ready within {timeout_s:.0f}s")


def _timed(request: Callable[[], httpx.Response], expected: int, what: str, durations: list[float],
           errors: Counter[str]) -> httpx.Response | None:
    """Send one request, adding its time to `durations`; None (the error counted) unless it answered `expected`."""
    started = time.perf_counter()
    try:
        response = request()
    except httpx.HTTPError as exc:
        errors[f"{what} {type(exc).__name__}"] += 1
        return None
    durations.append(time.perf_counter() - started)
    if response.status_code != expected:
        errors[f"{what} {response.status_code}"] += 1
        return None
    return response


def client_loop(base_url: str, token: str, workflow_id: str, stop_at: float, poll_every_s: float,
                tally: Tally, index: int) -> None:
    """One client: submit, poll to the end, repeat until `stop_at`."""
    headers = {"Authorization": f"Bearer {token}"}
    submits: list[float] = []
    polls: list[float] = []
    runs: list[float] = []
    errors: Counter[str] = Counter()
    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as http:
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            started = time.perf_counter()
            response = _timed(partial(http.post, f"/v1/workflows/{workflow_id}/runs",
                                      json={"inputs": {"ticket": f" c{index} r{n} "}}), 202, "submit", submits, errors)
            if response is None:
                continue
            run_id = response.json()["run_id"]
            while time.monotonic() < stop_at + 10.0:  # let a run in flight finish after the load window
                time.sleep(poll_every_s)
                polled = _timed(partial(http.get, f"/v1/runs/{run_id}"), 200, "poll", polls, errors)
                if polled is None:
                    continue
                status = polled.json()["status"]
                if status in FINAL:
                    if status != "succeeded":
                        errors[f"run {status}"] += 1
                    runs.append(time.perf_counter() - started)
                    break
            else:
                errors["run not finished"] += 1
    with tally.lock:
        tally.submit_s += submits
        tally.poll_s += polls
        tally.run_s += runs
        tally.errors.update(errors)


def drive(base_url: str, token: str, workflow_id: str, args: argparse.Namespace,
          join_grace_s: float = 40.0) -> dict[str, Any]:
    """`--clients` submit-then-poll loops for `--duration-s`; their latencies, throughput and errors.

    `join_grace_s`: how long after the load window the clients may take to finish their runs."""
    tally = Tally()
    started = time.monotonic()
    stop_at = started + args.duration_s
    threads = [threading.Thread(target=client_loop, args=(base_url, token, workflow_id, stop_at, args.poll_every_s,
                                                          tally, i), daemon=True) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, stop_at + join_grace_s - time.monotonic()))
    elapsed = time.monotonic() - started
    requests = len(tally.submit_s) + len(tally.poll_s)
    return {"elapsed_s": round(elapsed, 2), "submit": percentiles_ms(tally.submit_s),
            "poll": percentiles_ms(tally.poll_s), "run_end_to_end": percentiles_ms(tally.run_s),
            "requests": requests, "requests_per_s": round(requests / elapsed, 1),
            "submits_per_s": round(len(tally.submit_s) / elapsed, 1), "runs_finished": len(tally.run_s),
            "errors": dict(tally.errors), "error_count": sum(tally.errors.values()),
            "clients_still_running": sum(t.is_alive() for t in threads)}
