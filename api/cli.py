"""The `relayflow` command: `up` (zero-setup local stack), the production processes, and runs.

Exit codes: 0 success; 1 a run failed or was cancelled, or an error; 2 (`status`, `run`) the run
has not ended (still queued, running, or waiting for input); 3 (`status`) the API could not answer.
`submit`, `watch`, `resume` and `cancel` live in api/cli_runs.py; docs/cli.md documents them all.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click
from pydantic import ValidationError
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel

from api.cli_base import client_options, embedded_urls, console, make_client, print_error, print_outcome, run_table
from api.cli_runs import COMMANDS as RUN_COMMANDS
from api.cli_spaces import spaces
from api.cli_tokens import tokens
from api.client import FINAL_STATUSES, Client, WorkflowFile, parse_input
from api.processes import Child, Supervisor, child_env, web_command, worker_command
from engine.errors import ConfigurationError, EngineError
from engine.settings import PROJECT_ROOT, get_settings

POLL_EVERY_S = 0.5


class ChildDied(Exception):
    """A web or worker process of `relayflow up` exited."""

    def __init__(self, child: Child) -> None:
        self.child = child
        super().__init__(f"the {child.name} process exited with code {child.process.returncode}")


class Stopped(Exception):
    """SIGINT or SIGTERM asked `relayflow up` to stop."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="relayflow")
def main() -> None:
    """Relayflow: durable workflow runs for LLM applications."""
    # Every command reads the settings: contradictory or malformed ones stop here, in one
    # message naming the variables, before any process (web, workers) is started.
    try:
        get_settings()
    except ConfigurationError as exc:
        raise click.ClickException(exc.message) from None
    except ValidationError as exc:
        raise click.ClickException(f"Invalid settings: {exc}") from None


def follow(client: Client, runs: list[tuple[str, str | None]],
           check: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Poll runs, showing their node tables live, until each has ended or waits for input."""
    latest = {run_id: client.get_run(run_id) for run_id, _ in runs}

    def view() -> Group:
        return Group(*(run_table(latest[run_id], title) for run_id, title in runs))

    # not a terminal (CI, a pipe): no animation, the final tables only
    live = Live(view(), console=console, refresh_per_second=4, vertical_overflow="visible") \
        if console.is_terminal else None
    with live or contextlib.nullcontext():
        while any(r.get("status") not in FINAL_STATUSES | {"interrupted"} for r in latest.values()):
            time.sleep(POLL_EVERY_S)
            if check is not None:
                check()
            for run_id in latest:
                if latest[run_id].get("status") not in FINAL_STATUSES:
                    latest[run_id] = client.get_run(run_id)
            if live is not None:
                live.update(view())
    if live is None:
        console.print(view())
    return [latest[run_id] for run_id, _ in runs]


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-i", "--input", "inputs", multiple=True, metavar="KEY=VALUE",
              help="A run input; the value is read as JSON when it parses (n=3, tags='[\"a\"]'), else as text.")
@client_options
def run(file: Path, inputs: tuple[str, ...], url: str, token: str | None) -> None:
    """Register the workflow in FILE (YAML/JSON), run it, and show its progress until it ends."""
    try:
        values = dict(parse_input(item) for item in inputs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-i/--input") from None
    started: dict[str, Any] = {}
    with make_client(url, token) as client:
        try:
            workflow = WorkflowFile.read(file)
            created = client.create_workflow(workflow.name, workflow.definition, workflow.description)
            started = client.submit_run(created["workflow_id"], values)
            console.print(f"Workflow [bold]{escape(workflow.name)}[/] {created['workflow_id']} "
                          f"v{created.get('version', 1)}; run {started['run_id']}")
            final = follow(client, [(started["run_id"], workflow.name)])[0]
        except EngineError as exc:
            print_error(exc, str(file))
            sys.exit(1)
        except KeyboardInterrupt:
            if started:
                console.print(f"Stopped watching; the run goes on: relayflow status {started['run_id']}")
            sys.exit(130)
    sys.exit(print_outcome(final))


@main.command()
@click.argument("run_id")
@click.option("--follow", "-f", "keep_following", is_flag=True, help="Keep showing progress until the run ends.")
@client_options
def status(run_id: str, keep_following: bool, url: str, token: str | None) -> None:
    """Show a run and its nodes; exit 0 succeeded, 1 failed/cancelled, 2 not ended, 3 unknown."""
    with make_client(url, token) as client:
        try:
            if keep_following:
                found = follow(client, [(run_id, None)])[0]
            else:
                found = client.get_run(run_id)
                console.print(run_table(found))
        except EngineError as exc:
            print_error(exc)
            sys.exit(3)
    sys.exit(print_outcome(found))


def _exec(command: list[str], env: dict[str, str]) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, env)


def _require_urls(what: str, *, redis: bool = True) -> tuple[str, str | None]:
    database_url, redis_url = embedded_urls()
    if not database_url or (redis and not redis_url):
        needed = "DATABASE_URL=postgresql://user:pw@host/db" + (" and REDIS_URL=redis://host:6379/0" if redis else "")
        raise click.ClickException(f"`relayflow {what}` needs {needed}. For a local setup, `relayflow up` "
                                   "starts embedded servers with a web server and workers.")
    return database_url, redis_url


@main.command()
@click.option("--processes", "-p", default=2, show_default=True, type=click.IntRange(1, 256))
@click.option("--threads", "-t", default=8, show_default=True, type=click.IntRange(1, 1024))
def worker(processes: int, threads: int) -> None:
    """Run the Dramatiq workers (needs DATABASE_URL and REDIS_URL)."""
    database_url, redis_url = _require_urls("worker")
    _exec(worker_command(processes, threads), child_env(database_url, redis_url))


@main.command()
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 behind a proxy).")
def web(port: int, host: str) -> None:
    """Serve the HTTP API with gunicorn (needs DATABASE_URL and REDIS_URL)."""
    database_url, redis_url = _require_urls("web")
    _exec(web_command(port, host=host), child_env(database_url, redis_url))


@main.command()
def migrate() -> None:
    """Bring the database schema up to date (alembic upgrade head) at DATABASE_URL."""
    from engine.db import migrate as upgrade

    database_url, _ = _require_urls("migrate", redis=False)
    upgrade(database_url)
    console.print("[green]✔[/] database schema is up to date")


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
    with console.status("Waiting for the API and the workers…"):
        while not client.healthy():
            _check_children(supervisor)
            if time.monotonic() > deadline:
                raise click.ClickException(f"{client.base_url}/healthz did not answer 200 within {timeout_s:.0f} s; "
                                           f"see {supervisor.log_dir}/web.log")
            time.sleep(0.25)


def _check_children(supervisor: Supervisor) -> None:
    dead = supervisor.dead()
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
             "  relayflow run examples/<file>.yaml -i key=value"]
    if urls:
        lines += [f"More workers, from another terminal (as this user: the server URLs, passwords included, "
                  f"are read from {data_dir / 'embedded.json'}):",
                  f"  RELAYFLOW_DATA_DIR={data_dir} relayflow worker",
                  f"  (DATABASE_URL={mask_url(urls[0])} REDIS_URL={mask_url(urls[1])})"]
    console.print(escape("\n".join(lines)), soft_wrap=True)


def mask_url(url: str) -> str:
    """A server URL with its password replaced by `***`."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _child_account(data_dir: Path, env: dict[str, str]) -> Any:
    """As root, the service account `up`'s children run as (None otherwise); says what it changed."""
    from engine.privileges import child_account

    account, changed = child_account(data_dir, env, PROJECT_ROOT)
    if changed:
        console.print(f"[yellow]Added search permission (o+x, not read) to {escape(', '.join(changed))} so that "
                      f"user {account.name} can start this Python.[/]")
    return account


def run_demos(client: Client, examples_dir: Path, check: Callable[[], None] | None = None) -> None:
    """Register and run every workflow file in `examples_dir` with its `demo_inputs`; show them live."""
    paths = sorted(p for p in examples_dir.glob("*") if p.suffix in (".yaml", ".yml", ".json"))
    started: list[tuple[str, str | None]] = []
    for path in paths:
        try:
            workflow = WorkflowFile.read(path)
            created = client.create_workflow(workflow.name, workflow.definition, workflow.description)
            started.append((client.submit_run(created["workflow_id"], workflow.demo_inputs)["run_id"], path.name))
        except EngineError as exc:
            print_error(exc, path.name)
    if not started:
        console.print("[yellow]No demo workflow could be started.[/]")
        return
    for (_, title), final in zip(started, follow(client, started, check), strict=True):
        print_outcome(final, title)


def _start_fake_llm(supervisor: Supervisor, env: dict[str, str], account: Any) -> str:
    """The fake OpenAI-compatible provider the demo models use, as a supervised process; its URL."""
    from engine.embedded_os import free_port

    port = free_port(None)
    supervisor.spawn("fake-llm", [sys.executable, "-m", "engine.fake_llm", str(port)], env, account)
    deadline = time.monotonic() + 30
    while _port_is_free(port):
        _check_children(supervisor)
        if time.monotonic() > deadline:
            raise click.ClickException(f"the fake LLM provider did not listen on port {port}; "
                                       f"see {supervisor.log_dir}/fake-llm.log")
        time.sleep(0.1)
    console.print(f"Fake LLM provider (demo models, no API key) at http://127.0.0.1:{port}/v1")
    return f"http://127.0.0.1:{port}/v1"


@main.command()
@click.option("--demo", is_flag=True, help="Run every workflow under examples/ and show their progress.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="API port.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
def up(demo: bool, port: int, workers: int) -> None:
    """Start everything locally: database and Redis (embedded unless DATABASE_URL/REDIS_URL), API, workers."""
    from engine.embedded import EmbeddedServers

    settings = get_settings()
    if not _port_is_free(port):
        raise click.ClickException(f"Port {port} on 127.0.0.1 is in use; choose another with --port.")
    # SIGINT too: a shell starts background jobs with it ignored, and Ctrl-C must still stop us
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGINT, _raise_stopped)
    servers: EmbeddedServers | None = None
    supervisor = Supervisor(settings.data_dir / "logs")
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
            from engine.db import migrate as upgrade
            from engine.tokens import ensure_local_token

            upgrade(database_url)
            token = ensure_local_token(database_url, token_file=settings.data_dir / "token")
        env = child_env(database_url, redis_url)
        # as root, every process started below runs as the unprivileged service user
        account = _child_account(settings.data_dir, env)
        if demo:
            # the demo model files (conf/model/demo-*.yaml) take their base URL from this variable
            env["DEMO_LLM_URL"] = _start_fake_llm(supervisor, env, account)
        supervisor.spawn("web", web_command(port, control_socket=False), env, account)
        if os.geteuid() == 0:
            # The code sandbox's per-node cgroups: a parent the (unprivileged) workers may use.
            from engine.nodes.cgroup import delegate_code_cgroups

            delegate_code_cgroups(account.uid, account.gid)
        supervisor.spawn("worker", worker_command(workers, shutdown_timeout_s=20), env, account)
        base_url = f"http://127.0.0.1:{port}"
        with Client(base_url, token) as client:
            _wait_healthy(client, supervisor)
            _print_banner(base_url, settings.data_dir, embedded, supervisor.log_dir, account and account.name)
            if demo:
                run_demos(client, PROJECT_ROOT / "examples", lambda: _check_children(supervisor))
        console.print("Serving. Press Ctrl-C to stop.")
        while True:
            _check_children(supervisor)
            time.sleep(POLL_EVERY_S)
    except Stopped:
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


main.add_command(tokens)
main.add_command(spaces)
for command in RUN_COMMANDS:
    main.add_command(command)

if __name__ == "__main__":
    main()
