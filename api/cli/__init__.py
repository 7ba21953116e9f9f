"""Tooling, not the service: the `relayflow` command, its HTTP client and the process supervisor.

What belongs here: everything an operator or a developer runs from a terminal — the command line
(`main`, the `relayflow` script: docs/cli.md), the API client it uses (`client`), how runs and
errors look (`base`), the supervisor of `relayflow up` (`supervisor`, `privileges`, `up`), and the
operator commands that work on the database directly (`tokens`, `spaces`, `retention`).

What it may import: `engine` (settings, the store for operator commands, the error tree),
`api.localstack` (embedded servers, the fake LLM provider) and third-party libraries. It starts
the HTTP app only as a child process (gunicorn `api:create_app()`), never imports its modules;
and nothing in `api`'s HTTP modules, `engine` or `workers` imports this package
(tests/unit/test_import_rules.py holds both rules).

Exit codes: 0 success; 1 a run failed or was cancelled, or an error; 2 (`status`, `run`) the run
has not ended (still queued, running, or waiting for input); 3 (`status`) the API could not answer.
`submit`, `watch`, `resume` and `cancel` live in api/cli/runs.py, `why` in api/cli/why.py,
`rerun` in api/cli/reruns.py, `up` in api/cli/up.py.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from pydantic import ValidationError
from rich.markup import escape

from api.cli.base import (
    client_options,
    console,
    embedded_urls,
    follow,
    make_client,
    print_error,
    print_outcome,
    run_table,
)
from api.cli.client import WorkflowFile, parse_input
from api.cli.prompts import prompts
from api.cli.reruns import rerun
from api.cli.retention import retention
from api.cli.runs import COMMANDS as RUN_COMMANDS
from api.cli.spaces import spaces
from api.cli.supervisor import child_env, web_command, worker_command
from api.cli.tokens import tokens
from api.cli.up import up
from engine.errors import ConfigurationError, EngineError
from engine.settings import get_settings

# The Procfile's `worker --worker-shutdown-timeout 30000`: nodes in flight get 30 s to finish.
WORKER_SHUTDOWN_TIMEOUT_S = 30.0


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
    """Run the Dramatiq workers (needs DATABASE_URL and REDIS_URL).

    One worker process dying ends the group (dramatiq stops the others): the platform restarts it.
    """
    database_url, redis_url = _require_urls("worker")
    _exec(worker_command(processes, threads, shutdown_timeout_s=WORKER_SHUTDOWN_TIMEOUT_S),
          child_env(database_url, redis_url))


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
    # Imported here: SQLAlchemy and Alembic cost the other commands a second at start-up.
    from engine.db import migrate as upgrade

    database_url, _ = _require_urls("migrate", redis=False)
    upgrade(database_url)
    console.print("[green]✔[/] database schema is up to date")


main.add_command(up)
main.add_command(tokens)
main.add_command(spaces)
main.add_command(retention)
main.add_command(prompts)
main.add_command(rerun)
for command in RUN_COMMANDS:
    main.add_command(command)
