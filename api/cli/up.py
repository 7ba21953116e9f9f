"""`relayflow up`: the zero-setup local stack — embedded servers (unless DATABASE_URL/REDIS_URL),
migrations, the web server and a worker group under one supervisor, and `--demo`.

The supervisor restarts a web server or worker group that dies (with backoff, one line each);
a platform running `relayflow web` / `relayflow worker` itself must do the same (docs/cli.md).
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
from rich.markup import escape
from rich.panel import Panel

from api.cli.base import console, print_error
from api.cli.client import Client
from api.cli.demo import run_demos
from api.cli.privileges import child_account
from api.cli.supervisor import (
    IMPORT_ROOT,
    MULTIPROC_ENV,
    Child,
    Supervisor,
    child_env,
    exit_status,
    fresh_metrics_dir,
    web_command,
    worker_command,
)
from api.localstack.embedded import EmbeddedServers
from api.localstack.embedded_os import free_port
from engine.errors import EngineError
from engine.settings import get_settings, package_data
from engine.tokens import ensure_local_token

POLL_EVERY_S = 0.5


class ChildDied(Exception):
    """A web or worker process of `relayflow up` exited."""

    def __init__(self, child: Child) -> None:
        self.child = child
        super().__init__(f"the {child.name} process exited ({exit_status(child.process.returncode)})")


class Stopped(Exception):
    """SIGINT or SIGTERM asked `relayflow up` to stop."""


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    # Once: a second Ctrl-C (or a supervisor repeating the signal) must not cut the shutdown short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped()


def _wait_healthy(client: Client, supervisor: Supervisor, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    with console.status("Waiting for the API…"):
        while not client.healthy():
            _check_children(supervisor)
            if time.monotonic() > deadline:
                raise click.ClickException(f"{client.base_url}/healthz did not answer 200 within {timeout_s:.0f} s; "
                                           f"see {supervisor.log_dir}/web.log")
            time.sleep(0.25)


def _check_children(supervisor: Supervisor) -> None:
    """While starting: any child that died is fatal (a restart would only fail again)."""
    dead = supervisor.dead()
    if dead is not None:
        raise ChildDied(dead)


def _tend_children(supervisor: Supervisor) -> None:
    """Once serving: restart the children that died (with backoff)."""
    dead = supervisor.tend()
    if dead is not None:
        raise ChildDied(dead)


def _print_banner(base_url: str, data_dir: Path, urls: tuple[str, str] | None, log_dir: Path,
                  account: str | None) -> None:
    where = f"embedded servers in {escape(str(data_dir))}" if urls else "DATABASE_URL and REDIS_URL"
    token_file = data_dir / "token"
    console.print(Panel("\n".join([
        f"API    [bold]{base_url}[/]  (OpenAPI document at /openapi.json)",
        f"Token  saved in {escape(str(token_file))}",
        f"Data   {where}",
        f"Logs   {escape(str(log_dir))}/web.log and worker.log",
        *([f"User   web server and workers run as [bold]{escape(account)}[/]"] if account else []),
    ]), title="Relayflow is up", title_align="left", border_style="green", expand=False))
    # no secret is printed (the terminal may be shared, recorded or logged): the token and the
    # servers' passwords stay in their private files, which the commands below read
    lines = ["Try it:", f"  export RELAYFLOW_URL={base_url} RELAYFLOW_TOKEN=$(cat {token_file})",
             '  curl -s -H "Authorization: Bearer $RELAYFLOW_TOKEN" $RELAYFLOW_URL/v1/workflows',
             f"  relayflow run {package_data('examples')}/<file>.yaml -i key=value"]
    if urls:
        lines += [f"More workers, from another terminal (as this user: the server URLs, passwords included, "
                  f"are read from {data_dir / 'embedded.json'}):",
                  f"  RELAYFLOW_DATA_DIR={data_dir} relayflow worker",
                  f"  (DATABASE_URL={mask_url(urls[0])} REDIS_URL={mask_url(urls[1])})"]
    console.print(escape("\n".join(lines)), soft_wrap=True)


def mask_url(url: str) -> str:
    """A server URL with its password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _child_account(data_dir: Path, env: dict[str, str]) -> Any:
    """As root, the service account `up`'s children run as (None otherwise); says what it changed."""
    account, changed = child_account(data_dir, env, IMPORT_ROOT)
    if changed and account is not None:
        console.print(f"[yellow]Added search permission (o+x, not read) to {escape(', '.join(changed))} so that "
                      f"user {account.name} can start this Python.[/]")
    return account


def _start_fake_llm(supervisor: Supervisor, env: dict[str, str], account: Any) -> str:
    """The fake OpenAI-compatible provider the demo models use, as a supervised process; its URL."""
    port = free_port(None)
    supervisor.spawn("fake-llm", [sys.executable, "-m", "api.localstack.fake_llm", str(port)], env, account,
                     restart=True)
    deadline = time.monotonic() + 30
    while _port_is_free(port):
        _check_children(supervisor)
        if time.monotonic() > deadline:
            raise click.ClickException(f"the fake LLM provider did not listen on port {port}; "
                                       f"see {supervisor.log_dir}/fake-llm.log")
        time.sleep(0.1)
    console.print(f"Fake LLM provider (demo models, no API key) at http://127.0.0.1:{port}/v1")
    return f"http://127.0.0.1:{port}/v1"


@click.command()
@click.option("--demo", is_flag=True, help="Run every example workflow and show their progress.")
@click.option("--exit-after-demo", is_flag=True,
              help="With --demo: stop everything once the demo runs have ended; exit 0 if all succeeded, else 1.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="API port.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
def up(demo: bool, exit_after_demo: bool, port: int, workers: int) -> None:
    """Start everything locally: database and Redis (embedded unless DATABASE_URL/REDIS_URL), API, workers."""
    # Imported here: SQLAlchemy and Alembic take a second to import, which every other
    # `relayflow` command (run, status, watch...) would pay at start-up for nothing.
    from engine.db import migrate as upgrade

    if exit_after_demo and not demo:
        raise click.UsageError("--exit-after-demo needs --demo.")
    settings = get_settings()
    if not _port_is_free(port):
        raise click.ClickException(f"Port {port} on 127.0.0.1 is in use; choose another with --port.")
    # SIGINT too: a shell starts background jobs with it ignored, and Ctrl-C must still stop us
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGINT, _raise_stopped)
    servers: EmbeddedServers | None = None
    supervisor = Supervisor(settings.data_dir / "logs", say=lambda line: console.print(escape(line), style="yellow"))
    exit_code = 0
    try:
        database_url, redis_url = settings.database_url, settings.redis_url
        embedded: tuple[str, str] | None = None
        if not (database_url and redis_url):
            servers = EmbeddedServers(settings.data_dir)
            with console.status("Starting embedded PostgreSQL and Redis…"):
                embedded = servers.start()
            database_url, redis_url = database_url or embedded[0], redis_url or embedded[1]
        with console.status("Migrating the database…"):
            upgrade(database_url, unless_current=True)  # a restart at head skips Alembic
            token = ensure_local_token(database_url, token_file=settings.data_dir / "token")
        env = child_env(database_url, redis_url)
        # as root, every process started below runs as the unprivileged service user
        account = _child_account(settings.data_dir, env)
        # one folder for every web and worker process's metrics, so GET /metrics adds them all up
        # (docs/operations.md "Metrics"); the operator's own folder, if set, is used as it is
        if not env.get(MULTIPROC_ENV):
            env[MULTIPROC_ENV] = str(fresh_metrics_dir(settings.data_dir / "metrics", account))
        if demo:
            # the demo model files (conf/model/demo-*.yaml) take their base URL from this variable
            env["DEMO_LLM_URL"] = _start_fake_llm(supervisor, env, account)
        supervisor.spawn("web", web_command(port, control_socket=False), env, account, restart=True)
        base_url = f"http://127.0.0.1:{port}"
        with Client(base_url, token) as client:
            # The web first, the workers once it answers: both import the project (~3 s of CPU per
            # process, and each worker then imports LiteLLM), and on a small machine the web's
            # processes booted twice as slowly beside them. A run submitted before the workers
            # are up waits queued, as with any worker restart.
            _wait_healthy(client, supervisor)
            if os.geteuid() == 0:
                # The code sandbox's per-node cgroups: a parent the (unprivileged) workers may use.
                # Imported here: engine.nodes loads every node type, time that only `up` as root
                # needs, and this package is imported by every `relayflow` command.
                from engine.nodes.cgroup import delegate_code_cgroups

                delegate_code_cgroups(account.uid, account.gid)
            supervisor.spawn("worker", worker_command(workers, shutdown_timeout_s=20), env, account, restart=True)
            _print_banner(base_url, settings.data_dir, embedded, supervisor.log_dir, account and account.name)
            if demo:
                succeeded = run_demos(client, package_data("examples"), lambda: _tend_children(supervisor))
                if exit_after_demo:
                    console.print(f"Demo {'succeeded' if succeeded else 'failed'}; stopping (--exit-after-demo).")
                    exit_code = 0 if succeeded else 1
                    raise Stopped()
        console.print("Serving. Press Ctrl-C to stop.")
        while True:
            _tend_children(supervisor)
            time.sleep(POLL_EVERY_S)
    except Stopped:
        if not exit_after_demo:
            console.print("\nStopping…")
    except ChildDied as exc:
        console.print(f"[bold red]error:[/] {exc}; last lines of {exc.child.log_path}:")
        console.print(escape(exc.child.tail()), style="dim")
        exit_code = 1
    except EngineError as exc:
        print_error(exc)
        exit_code = 1
    finally:
        # a second Ctrl-C must not cut the shutdown short (kill -9 still works: children die with us)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with console.status("Stopping the web server and workers…"):
            supervisor.stop()
        if servers is not None:
            with console.status("Stopping the embedded servers…"):
                servers.stop()
    sys.exit(exit_code)
