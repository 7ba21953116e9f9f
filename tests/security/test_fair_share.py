"""Fair share between spaces (issue 9, item 5): one space's backlog cannot starve another.

Each test runs real `dramatiq` worker processes on a real Postgres and Redis. Space `hog`
floods the queue with runs whose node sleeps; the per-space cap on running nodes
(RELAYFLOW_SPACE_MAX_RUNNING_NODES, overridable per space with `relayflow spaces set-cap`)
keeps worker threads free for every other space.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from engine.db import get_engine
from engine.settings import Settings
from engine.store import Store
from engine.tokens import issue_token
from tests.conftest import ROOT, WorkerProcess, settings_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CAP = 3          # the deployment's default cap in these tests
THREADS = 4      # per worker process; 2 processes = 8 threads, well above the cap
FINAL = ("succeeded", "failed", "cancelled")


def _sleep_definition(seconds: float) -> dict[str, Any]:
    return {"nodes": [{"id": "nap", "type": "sleep", "config": {"seconds": seconds}}],
            "outputs": {"slept": "{{ nap.slept_s }}"}}


TRIVIAL = {"nodes": [{"id": "hi", "type": "template", "config": {"template": "hi"}}],
           "outputs": {"text": "{{ hi.text }}"}}


@pytest.fixture
def workers(start_worker: Callable[..., WorkerProcess]) -> Callable[..., WorkerProcess]:
    """Start worker groups with the deployment's default cap (CAP) in their environment."""

    def start(processes: int = 2, threads: int = THREADS, cap: int = CAP) -> WorkerProcess:
        return start_worker(processes, threads, env={"RELAYFLOW_SPACE_MAX_RUNNING_NODES": str(cap)})

    return start


@pytest.fixture
def store(settings: Settings) -> Store:
    """The storage layer on this test's database."""
    return Store.from_engine(get_engine(settings))


@pytest.fixture
def db(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """A plain connection to the test database, for sampling what runs."""
    url = (settings.database_url or "").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


class Space:
    """One space seen through the real API (Flask app, bearer token of that space)."""

    def __init__(self, app: Any, store: Store, space_id: str) -> None:
        self.id = space_id
        self.client = app.test_client()
        token = issue_token(store, space_id, f"{space_id}-admin", ("admin",), create_space=True).token
        self.client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"

    def workflow(self, definition: dict[str, Any]) -> str:
        response = self.client.post("/v1/workflows", json={"name": "wf", "definition": definition})
        assert response.status_code == 201, response.get_json()
        return str(response.get_json()["workflow_id"])

    def submit(self, workflow_id: str) -> str:
        response = self.client.post(f"/v1/workflows/{workflow_id}/runs", json={"inputs": {}})
        assert response.status_code == 202, response.get_json()
        return str(response.get_json()["run_id"])

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/runs/{run_id}")
        assert response.status_code == 200, response.get_json()
        return dict(response.get_json())


def _running(db: psycopg.Connection[Any], space_id: str) -> int:
    row = db.execute("""SELECT count(*) FROM node_runs n JOIN runs r ON r.id = n.run_id
                         WHERE r.space_id = %s AND n.status = 'running'""", (space_id,)).fetchone()
    return int(row[0]) if row else 0


class Sampler:
    """Samples a space's running nodes every 20 ms in a thread; `peak` is the most seen at once."""

    def __init__(self, db: psycopg.Connection[Any], space_id: str) -> None:
        # its own connection: the test's thread queries `db` at the same time
        self.db = psycopg.connect(db.info.dsn, autocommit=True)
        self.space_id, self.peak, self.samples = space_id, 0, 0
        self.error: psycopg.Error | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, _running(self.db, self.space_id))
            except psycopg.Error as exc:  # kept for the test's message: sampling stopped early
                self.error = exc
                return
            self.samples += 1

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        self.db.close()
        return self.peak


@pytest.fixture
def sample(db: psycopg.Connection[Any]) -> Iterator[Callable[[str], Sampler]]:
    """Start samplers of a space's running nodes; all stop at teardown."""
    started: list[Sampler] = []

    def start(space_id: str) -> Sampler:
        started.append(Sampler(db, space_id))
        return started[-1]

    yield start
    for sampler in started:
        sampler.stop()


def _flood(space: Space, workflow_id: str, runs: int) -> list[str]:
    return [space.submit(workflow_id) for _ in range(runs)]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backlog", ["being_worked", "untouched"])
def test_a_space_with_500_queued_sleeping_runs_does_not_delay_another_spaces_run(
        backlog: str, app: Any, store: Store, workers: Callable[..., WorkerProcess], db: psycopg.Connection[Any],
        sample: Callable[[str], Sampler]) -> None:
    # Given 8 worker threads, a cap of 3 running nodes per space, and space `hog` that has queued
    # 500 runs whose one node sleeps 2 s: either while the workers run ("being_worked"), or with
    # no worker up, so that all 500 messages are in the queue ahead of B's ("untouched")
    hog, other = Space(app, store, "hog"), Space(app, store, "other")
    nap, trivial = hog.workflow(_sleep_definition(2.0)), other.workflow(TRIVIAL)
    if backlog == "being_worked":
        workers()
    t0 = time.monotonic()
    _flood(hog, nap, 500)
    print(f"\n500 hog runs submitted in {time.monotonic() - t0:.1f}s")
    sampler = sample("hog")
    if backlog == "being_worked":
        wait_for(lambda: _running(db, "hog") >= CAP, timeout_s=60)
    # When space `other` submits one trivial run
    started = time.monotonic()
    run_id = other.submit(trivial)
    if backlog == "untouched":
        workers()
    run = wait_for(lambda: (r := other.run(run_id))["status"] in FINAL and r, timeout_s=200, interval_s=0.02)
    waited = time.monotonic() - started
    if backlog == "untouched":  # count from the workers' first claim: their start-up is not the backlog's doing
        first = db.execute("""SELECT extract(epoch FROM %s::timestamptz - min(n.started_at))
                                FROM node_runs n JOIN runs r ON r.id = n.run_id WHERE r.space_id IN ('hog', 'other')""",
                           (run["finished_at"],)).fetchone()
        print(f"[{backlog}] {waited:.2f}s after its submit, including the workers' start-up")
        waited = float(first[0]) if first else waited
    print(f"[{backlog}] space other's one-node run ended ({run['status']}) {waited:.2f}s after "
          f"{'its submit' if backlog == 'being_worked' else 'the workers first claimed'}, "
          f"behind {500 - _count(db, 'hog', 'succeeded')} unfinished hog runs")
    # Then it succeeded within a few seconds
    assert run["status"] == "succeeded", run
    assert waited < 10.0, f"space other waited {waited:.1f}s behind space hog's backlog"
    # And hog's runs still progress, never more than its cap at once (the cap throttles, it does not stop)
    wait_for(lambda: _count(db, "hog", "succeeded") >= 3 * CAP, timeout_s=60)
    peak = sampler.stop()
    assert sampler.samples >= 3
    assert 1 <= peak <= CAP, f"space hog ran {peak} nodes at once; its cap is {CAP}"
    running, waiting = _space_row(db, "hog")
    assert running <= CAP and waiting > 400  # the rest wait for a slot, without a message in the queue
    # And the waiting costs no spinning: about one refused claim per queued run, not one per poll
    time.sleep(1.5)  # Postgres publishes table statistics about once a second
    parks = db.execute("SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'space_waiters'").fetchone()
    started_nodes = _count(db, "hog", "succeeded") + _running(db, "hog")
    print(f"[{backlog}] {parks[0] if parks else '?'} refusals (waitlist entries) for 500 queued runs, "
          f"{started_nodes} started")
    assert parks is not None and parks[0] < 500 + 2 * started_nodes


def _count(db: psycopg.Connection[Any], space_id: str, status: str) -> int:
    row = db.execute("SELECT count(*) FROM runs WHERE space_id = %s AND status = %s", (space_id, status)).fetchone()
    return int(row[0]) if row else 0


def _space_row(db: psycopg.Connection[Any], space_id: str) -> tuple[int, int]:
    """(the trigger-kept running_nodes, the space's waitlist length)."""
    row = db.execute("""SELECT s.running_nodes, (SELECT count(*) FROM space_waiters w WHERE w.space_id = s.id)
                          FROM spaces s WHERE s.id = %s""", (space_id,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**settings_env(settings), "COLUMNS": "200", "RELAYFLOW_SPACE_MAX_RUNNING_NODES": str(CAP)}
    return subprocess.run([sys.executable, "-m", "api.cli", "spaces", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(240)
def test_a_spaces_own_cap_overrides_the_default_and_every_run_still_finishes(
        app: Any, store: Store, settings: Settings, workers: Callable[..., WorkerProcess], db: psycopg.Connection[Any],
        sample: Callable[[str], Sampler]) -> None:
    # Given spaces `small` (its own cap set to 1 by the operator's CLI) and `big` (the default cap)
    small, big = Space(app, store, "small"), Space(app, store, "big")
    done = _cli(settings, "set-cap", "small", "1")
    assert done.returncode == 0 and "at most 1 nodes" in done.stdout, done.stderr + done.stdout
    refused = _cli(settings, "set-cap", "small", "many")
    assert refused.returncode != 0 and "give a whole number >= 0" in refused.stderr
    missing = _cli(settings, "set-cap", "nowhere", "2")
    assert missing.returncode != 0 and "Space nowhere not found" in missing.stderr
    small_wf, big_wf = small.workflow(_sleep_definition(0.5)), big.workflow(_sleep_definition(0.5))
    # When both queue 12 sleeping runs on 8 worker threads
    runs = [(small, small.submit(small_wf)) for _ in range(12)] + [(big, big.submit(big_wf)) for _ in range(12)]
    small_peak, big_peak = sample("small"), sample("big")
    workers()
    # Then every run succeeds; `small` never ran more than 1 node at once, `big` more than 1 but never above 3
    for space, run_id in runs:
        run = wait_for(lambda space=space, run_id=run_id: (r := space.run(run_id))["status"] in FINAL and r, timeout_s=120)
        assert run["status"] == "succeeded", run
        assert run["nodes"][0]["attempts"] == 1, run  # a refusal is not an attempt
    assert small_peak.stop() == 1
    assert 2 <= big_peak.stop() <= CAP  # more than `small`, never above the default
    # And the counts came back to zero: no slot leaked, nobody left waiting
    assert _space_row(db, "small") == (0, 0) and _space_row(db, "big") == (0, 0)
    listed = _cli(settings, "list")
    assert listed.returncode == 0, listed.stderr
    assert "1 (own)" in listed.stdout and f"{CAP} (RELAYFLOW_SPACE_MAX_RUNNING_NODES)" in listed.stdout
    # And `default` gives the space the deployment's cap again
    reset = _cli(settings, "set-cap", "small", "default")
    assert reset.returncode == 0 and f"default cap ({CAP})" in reset.stdout, reset.stdout


@pytest.mark.timeout(240)
def test_a_worker_killed_while_holding_its_spaces_slots_does_not_leak_them(
        app: Any, store: Store, workers: Callable[..., WorkerProcess], db: psycopg.Connection[Any],
        sample: Callable[[str], Sampler]) -> None:
    # Given space `hog` with 9 runs of a 3 s sleep, and a worker holding all 3 of its slots
    hog = Space(app, store, "hog")
    nap = hog.workflow(_sleep_definition(3.0))
    runs = [hog.submit(nap) for _ in range(9)]
    first = workers(processes=1)
    wait_for(lambda: _space_row(db, "hog") == (CAP, 9 - CAP), timeout_s=60)
    # When that worker is killed with SIGKILL (no chance to release anything)
    first.kill(signal.SIGKILL)
    assert _space_row(db, "hog")[0] == CAP  # the dead worker's nodes still count until their leases expire
    peak = sample("hog")
    workers(processes=1)
    # Then the expired leases give the slots back, and all 9 runs finish, never above the cap
    for run_id in runs:
        run = wait_for(lambda run_id=run_id: (r := hog.run(run_id))["status"] in FINAL and r, timeout_s=120)
        assert run["status"] == "succeeded", run
    assert peak.stop() <= CAP
    assert _space_row(db, "hog") == (0, 0)
    crashed = db.execute("SELECT count(*) FROM node_runs WHERE crashes > 0").fetchone()
    assert crashed is not None and crashed[0] == CAP


@pytest.mark.timeout(240)
def test_waiting_nodes_survive_redis_losing_every_message(
        app: Any, store: Store, settings: Settings, workers: Callable[..., WorkerProcess], db: psycopg.Connection[Any]) -> None:
    import redis as redis_lib

    # Given space `hog` at its cap with 9 runs of a 2 s sleep: 3 running, 6 on its waitlist
    hog = Space(app, store, "hog")
    nap = hog.workflow(_sleep_definition(2.0))
    runs = [hog.submit(nap) for _ in range(9)]
    workers(processes=1)
    wait_for(lambda: _space_row(db, "hog") == (CAP, 9 - CAP), timeout_s=60)
    # When Redis loses every message (FLUSHDB of the test's Redis database), wake-ups included
    client = redis_lib.Redis.from_url(settings.redis_url or "")
    client.flushdb()
    client.close()
    # Then every run still finishes (waiters live in Postgres; a lost wake is re-sent by the reconciler)
    for run_id in runs:
        run = wait_for(lambda run_id=run_id: (r := hog.run(run_id))["status"] in FINAL and r, timeout_s=120)
        assert run["status"] == "succeeded", run
        assert run["nodes"][0]["attempts"] == 1, run
    assert _space_row(db, "hog") == (0, 0)
