"""The embedded PostgreSQL and Redis of `relayflow up`: real servers in a temporary data folder."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from api.localstack.embedded import EmbeddedServers

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A fresh data folder outside data_dir: each pytest session start resets
    /tmp/pytest-of-<user> to 0700, hiding it from the unprivileged user the servers run as."""
    path = Path(tempfile.mkdtemp(prefix="relayflow-embedded-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _psycopg_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_data_survives_a_restart_on_the_same_folder(data_dir: Path) -> None:
    # Given servers started in a fresh folder, holding a table and a key
    with EmbeddedServers(data_dir) as servers:
        database_url, redis_url = servers.start()
        assert database_url.startswith("postgresql+psycopg://relayflow:")
        assert database_url.endswith("/relayflow") and "@127.0.0.1:" in database_url
        assert redis_url.startswith("redis://") and "@127.0.0.1:" in redis_url and redis_url.endswith("/0")
        with psycopg.connect(_psycopg_url(database_url)) as conn:
            conn.execute("CREATE TABLE greeting (id int PRIMARY KEY, text text NOT NULL)")
            conn.execute("INSERT INTO greeting VALUES (1, 'hello')")
        with redis.Redis.from_url(redis_url) as client:
            client.set("relayflow:test", "kept")
        pids = servers.pids
    # When they are stopped, then started again on the same folder
    assert all(_gone(pid) for pid in pids.values())
    with EmbeddedServers(data_dir) as servers:
        database_url, redis_url = servers.start()
        # Then the table and the key are still there
        with psycopg.connect(_psycopg_url(database_url)) as conn:
            assert conn.execute("SELECT text FROM greeting WHERE id = 1").fetchone() == ("hello",)
        with redis.Redis.from_url(redis_url) as client:
            assert client.get("relayflow:test") == b"kept"


def test_a_second_start_reuses_running_servers_without_owning_them(data_dir: Path) -> None:
    # Given servers started by one object
    with EmbeddedServers(data_dir) as first:
        urls = first.start()
        # When another object starts on the same folder
        second = EmbeddedServers(data_dir)
        # Then it gets the same servers, and stopping it leaves them running
        assert second.start() == urls
        assert not second.owns_servers
        second.stop()
        with psycopg.connect(_psycopg_url(urls[0])) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_servers_listen_on_loopback_only_and_require_a_password(data_dir: Path) -> None:
    with EmbeddedServers(data_dir) as servers:
        database_url, redis_url = servers.start()
        for pid in servers.pids.values():
            listening = [c for c in psutil.Process(pid).net_connections("inet") if c.status == psutil.CONN_LISTEN]
            assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}
        port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as anonymous:
            anonymous.sendall(b"PING\r\n")
            assert anonymous.recv(100).startswith(b"-NOAUTH")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(_psycopg_url(database_url).replace(database_url.split(":")[2].split("@")[0], "wrong"),
                            connect_timeout=5).close()


def test_servers_stop_when_their_parent_is_killed(data_dir: Path) -> None:
    # Given a process that started the servers
    script = textwrap.dedent(f"""
        import json, sys, time
        from api.localstack.embedded import EmbeddedServers
        servers = EmbeddedServers({str(data_dir)!r})
        servers.start()
        print(json.dumps(servers.pids), flush=True)
        time.sleep(60)
    """)
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                          cwd=Path(__file__).resolve().parents[2]) as parent:
        try:
            assert parent.stdout is not None
            pids = json.loads(parent.stdout.readline())
            # When it is killed without a chance to clean up
            parent.send_signal(signal.SIGKILL)
            parent.wait(10)
        finally:
            parent.kill()
    # Then the servers stop too, and a later start on the same folder works
    assert all(_gone(pid, 20) for pid in pids.values())
    with EmbeddedServers(data_dir) as servers, psycopg.connect(_psycopg_url(servers.start()[0])) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
