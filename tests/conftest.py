"""Shared fixtures: real PostgreSQL and Redis, a database per test (a clone of a migrated
template, emptied between tests: tests/dbpool.py), a Redis queue per test, and the node
messages run either by real `dramatiq` worker processes (`start_worker`: crashes, leases,
Redis faults, worker-enforced limits) or in the test's own thread (`inline_worker`: graph
semantics, in a fraction of the time).

Servers come from RELAYFLOW_TEST_DATABASE_URL / RELAYFLOW_TEST_REDIS_URL, else the local
defaults (127.0.0.1:5432 and :6379), else embedded servers started for the session.
"""
from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import redis as redis_lib

from engine.settings import Settings
from tests.dbpool import DatabasePool, with_db

if TYPE_CHECKING:
    from engine.testing import InlineWorker

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DB = f"relayflow_test_template_{os.getpid()}"  # per session: sessions may overlap
# One Redis database per pytest-xdist worker (gw0, gw1, …): tests flush theirs before and after.
REDIS_TEST_DB = int(os.environ.get("RELAYFLOW_TEST_REDIS_DB", "13")) + int(
    os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
pytest_plugins = ["tests.integration.llm_fixtures"]  # the fake LLM provider and model folders


# Fixtures that start real processes (or a fake provider for an LLM node): seconds, not milliseconds.
PROCESS_FIXTURES = frozenset({"start_worker", "start_web", "web_server", "stack", "fake_llm"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first (`slow`, then those starting processes), the rest in their order.

    xdist hands tests out in this order: a long test picked up last keeps the run going while
    the other workers sit idle; picked up first, it overlaps with the many short ones.
    """
    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("slow") is not None:
            return 0
        return 1 if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())) else 2

    items.sort(key=rank)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(admin postgres URL without database, redis base URL) for the session."""
    pg = os.environ.get("RELAYFLOW_TEST_DATABASE_URL")
    rd = os.environ.get("RELAYFLOW_TEST_REDIS_URL")
    embedded = None
    if not pg and _reachable("127.0.0.1", 5432):
        pg = "postgresql://postgres@127.0.0.1:5432/postgres"
    if not rd and _reachable("127.0.0.1", 6379):
        rd = "redis://127.0.0.1:6379/0"
    if not pg or not rd:
        from api.localstack.embedded import EmbeddedServers

        # Not under pytest's tmp dir: as root, the servers run as an unprivileged user, and
        # pytest resets its tmp root to 0700 at every session start.
        embedded = EmbeddedServers(Path(tempfile.mkdtemp(prefix="relayflow-test-")))
        epg, erd = embedded.start()
        pg = pg or epg.replace("postgresql+psycopg://", "postgresql://")
        rd = rd or erd
    yield pg, rd
    if embedded is not None:
        embedded.stop()


@pytest.fixture(scope="session")
def template_db(servers: tuple[str, str]) -> Iterator[str]:
    """A database migrated once per session (`alembic upgrade head`), cloned for the tests."""
    from engine.db import migrate

    admin = servers[0]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    migrate(with_db(admin, TEMPLATE_DB))
    yield TEMPLATE_DB
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")


@pytest.fixture(scope="session")
def database_pool(servers: tuple[str, str], template_db: str) -> Iterator[DatabasePool]:
    """Clones of the template, emptied between tests rather than dropped (tests/dbpool.py)."""
    pool = DatabasePool(servers[0], template_db)
    yield pool
    pool.close()


@pytest.fixture
def database_url(servers: tuple[str, str], database_pool: DatabasePool) -> Iterator[str]:
    """A migrated database with no rows, for this test alone (SQLAlchemy URL)."""
    name = database_pool.acquire()
    yield Settings(database_url=with_db(servers[0], name)).database_url or ""
    from engine import db

    for key, engine in list(db._engines.items()):
        if key[1].endswith("/" + name):  # (pid, url, pre_ping)
            engine.dispose()
            db._engines.pop(key, None)
    database_pool.release(name)


@pytest.fixture
def redis_url(servers: tuple[str, str]) -> Iterator[str]:
    """The test Redis database, flushed before and after (FLUSHDB on that database only)."""
    url = servers[1].rsplit("/", 1)[0] + f"/{REDIS_TEST_DB}"
    client = redis_lib.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    """Settings for a fast-reacting test deployment (short leases, frequent reconciling)."""
    return Settings(database_url=database_url, redis_url=redis_url,
                    queue_name=f"rf_{uuid.uuid4().hex[:8]}", lease_s=3.0, lease_renew_every_s=1.0,
                    reconcile_every_s=0.5, resend_queued_after_s=2.0, retry_grace_s=0.5,
                    redis_heartbeat_timeout_ms=2000, http_allow_private=True, sse_keepalive_s=1.0,
                    # LiteLLM's import costs seconds of CPU in every worker process: tests that
                    # want it at start (test_llm_warmup.py) turn it back on
                    worker_warm_llm=False)


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that give a child process the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYFLOW_")}
    env.update({"DATABASE_URL": settings.database_url or "", "REDIS_URL": settings.redis_url or "",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"})
    for name in ("queue_name", "lease_s", "lease_renew_every_s", "reconcile_every_s",
                 "resend_queued_after_s", "retry_grace_s", "redis_heartbeat_timeout_ms",
                 "http_allow_private", "max_crashes", "sse_keepalive_s", "worker_heartbeat_s", "worker_warm_llm",
                 # limits for untrusted authors (tests/security lower them)
                 "definition_max_bytes", "definition_max_depth", "definition_max_nodes", "template_max_chars",
                 "node_input_max_bytes", "node_output_max_bytes", "run_output_max_bytes", "node_timeout_grace_s"):
        env[f"RELAYFLOW_{name.upper()}"] = str(getattr(settings, name))
    if settings.model_dir is not None:
        env["RELAYFLOW_MODEL_DIR"] = str(settings.model_dir)
    return env


class WorkerProcess:
    """A real `dramatiq workers` process group."""

    def __init__(self, settings: Settings, processes: int, threads: int, log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli.dramatiq_main", "--processes", str(processes),
             "--threads", str(threads), "--worker-shutdown-timeout", "2000"],
            cwd=ROOT, env=settings_env(settings) | (env or {}), stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole group (main and worker processes)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.log.close()


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker process groups; all are killed at teardown."""
    started: list[WorkerProcess] = []

    def start(processes: int = 1, threads: int = 4, env: dict[str, str] | None = None) -> WorkerProcess:
        """`env`: extra environment variables for this worker (e.g. settings under test)."""
        worker = WorkerProcess(settings, processes, threads, tmp_path / f"worker{len(started)}.log", env)
        started.append(worker)
        return worker

    yield start
    # SIGKILL, not a graceful stop: the test is over, its database and Redis db are dropped next,
    # and dramatiq's graceful stop costs ~1.2 s per group (SIGKILL takes sandboxed children with
    # it: test_killed_worker_takes_every_sandboxed_process_with_it).
    for worker in started:
        worker.kill(signal.SIGKILL)


@pytest.fixture
def inline_worker(app: Any, settings: Settings, api: ApiHelper) -> Iterator[InlineWorker]:
    """Run this test's node messages in its own thread: no Redis hop, no worker process.

    The API's dispatcher becomes an in-memory one (the real Executor, store and database run
    every message), and `api.wait` drains it before it polls, so a test reads as with workers.
    Call `inline_worker.drain()` to run what is queued at any other point.
    """
    from api.runtime import runtime
    from engine.db import get_engine
    from engine.executor import Executor
    from engine.reconciler import Reconciler
    from engine.store import Store
    from engine.testing import InlineWorker, MemoryDispatcher

    with app.app_context():
        service = runtime().service
    messages = MemoryDispatcher()
    service.dispatcher = messages  # the one seam: what the API sends lands here
    executor = Executor(Store.from_engine(get_engine(settings, pre_ping=False)), messages, settings,
                        service.notifier)
    worker = InlineWorker(executor, messages, Reconciler(executor, messages, settings))
    api.drive = worker.drain
    yield worker
    # What this test's objects leave unclosed (a LiteLLM Router, say) is reported now, in this
    # test, not by whichever later test happens to trigger the garbage collector.
    del worker, executor
    gc.collect()


def free_port() -> int:
    """A TCP port on loopback nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WebProcess:
    """The real web process (gunicorn, `api.cli.supervisor.web_command` as `relayflow up` runs it) on a
    free loopback port, started and reachable.

    One gunicorn worker unless a test asks for more: each loads the whole app (~1.5 s of CPU), and
    only the tests about serving under load (streams, template bombs) need a second one.
    """

    def __init__(self, settings: Settings, log_path: Path, env: dict[str, str] | None = None,
                 workers: int = 1) -> None:
        from api.cli.supervisor import web_command

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with open(log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(web_command(self.port, workers=workers, control_socket=False), cwd=ROOT,
                                         env=settings_env(settings) | (env or {}), stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not _reachable("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"gunicorn did not start: {log_path.read_text(errors='replace')}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the process group (SIGTERM by default), SIGKILL it if it lingers."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def start_web(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WebProcess]]:
    """Start web processes (`env`: extra settings, `name`: its log file, `workers`: gunicorn's);
    all are stopped at teardown."""
    started: list[WebProcess] = []

    def start(env: dict[str, str] | None = None, name: str = "web", workers: int = 1) -> WebProcess:
        web = WebProcess(settings, tmp_path / f"{name}.log", env, workers)
        started.append(web)
        return web

    yield start
    # SIGKILL at teardown: gunicorn's graceful stop of idle gevent workers takes 4-7 s here, and
    # no test looks at the server after it ends (its database is dropped next).
    for web in started:
        web.stop(signal.SIGKILL)


@pytest.fixture
def web_server(start_web: Callable[..., WebProcess]) -> str:
    """The real web process on a free loopback port (its output in `web.log`); its URL."""
    return start_web().url


@pytest.fixture
def app(settings: Settings) -> Any:
    """The Flask app on this test's servers."""
    from api import create_app

    return create_app(settings)


@pytest.fixture
def token(settings: Settings) -> str:
    """A token of the default space with every scope."""
    from engine.tokens import ensure_local_token

    return ensure_local_token(settings.database_url or "")


@pytest.fixture
def client(app: Any, token: str) -> Any:
    """A test client that sends the bearer token."""
    test_client = app.test_client()
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return test_client


def processes_with(marker: str) -> list[int]:
    """Live (not zombie) host processes whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_for(predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.05) -> Any:
    """Poll until predicate() is truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")


class ApiHelper:
    """Short-hands over the test client for the common calls."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.drive: Callable[[], Any] | None = None  # set by `inline_worker`: runs queued node messages

    def create_workflow(self, definition: dict[str, Any] | str, name: str = "wf") -> str:
        """Create a workflow and return its id (asserting 201)."""
        response = self.client.post("/v1/workflows", json={"name": name, "definition": definition})
        assert response.status_code == 201, response.get_json()
        return response.get_json()["workflow_id"]

    def submit(self, workflow_id: str, inputs: dict[str, Any] | None = None, **extra: Any) -> str:
        """Submit a run and return its id (asserting 202)."""
        response = self.client.post(f"/v1/workflows/{workflow_id}/runs", json={"inputs": inputs or {}, **extra})
        assert response.status_code == 202, response.get_json()
        return response.get_json()["run_id"]

    def run(self, run_id: str) -> dict[str, Any]:
        """GET the run object."""
        response = self.client.get(f"/v1/runs/{run_id}")
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def wait(self, run_id: str, timeout_s: float = 30.0,
             statuses: tuple[str, ...] = ("succeeded", "failed", "cancelled")) -> dict[str, Any]:
        """Poll the run until it reaches one of `statuses` (running queued messages first, in-process)."""
        if self.drive is not None:
            self.drive()
        return wait_for(lambda: (r := self.run(run_id))["status"] in statuses and r, timeout_s)

    def warm_up(self) -> None:
        """Run one trivial run to its end, so that timings after it exclude the workers' start-up."""
        workflow_id = self.create_workflow({"nodes": [{"id": "w", "type": "template", "config": {"template": "warm"}}],
                                            "outputs": {"text": "{{ w.text }}"}}, name="warm-up")
        assert self.wait(self.submit(workflow_id), timeout_s=60)["status"] == "succeeded"

    @staticmethod
    def node(run: dict[str, Any], node_id: str) -> dict[str, Any]:
        """One node of a run object."""
        return next(n for n in run["nodes"] if n["node_id"] == node_id)


@pytest.fixture
def api(client: Any) -> ApiHelper:
    """API short-hands with a valid token."""
    return ApiHelper(client)
