"""What the `relayflow` client commands share: the console, --url/--token, and how runs and errors look."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table

from api.cli.client import DEFAULT_URL, Client
from api.localstack.embedded import EmbeddedServers
from engine.errors import EngineError
from engine.settings import get_settings
from engine.statuses import FINAL_STATUSES, SETTLED_STATUSES, RunStatus

console = Console(highlight=False)
POLL_EVERY_S = 0.5
PROGRESS_WIDTH = 20  # characters of a composite node's progress bar
_STATUS_STYLE = {
    "succeeded": "green", "failed": "bold red", "cancelled": "yellow", "interrupted": "yellow",
    "running": "cyan", "retrying": "magenta", "queued": "blue", "waiting": "dim", "skipped": "dim",
    "delegated": "cyan",
}


def client_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --url and --token (also read from RELAYFLOW_URL and RELAYFLOW_TOKEN)."""
    command = click.option("--token", envvar="RELAYFLOW_TOKEN", metavar="TOKEN",
                           help="Bearer token [env RELAYFLOW_TOKEN; default: the one `relayflow up` wrote].")(command)
    return click.option("--url", envvar="RELAYFLOW_URL", default=DEFAULT_URL, show_default=True,
                        help="Base URL of the API [env RELAYFLOW_URL].")(command)


def make_client(url: str, token: str | None) -> Client:
    """A client with the given token, else the local one from `<data_dir>/token`."""
    if not token:
        token_file = get_settings().data_dir / "token"
        try:
            token = token_file.read_text().strip()
        except OSError:
            raise click.ClickException(f"No token: pass --token, set RELAYFLOW_TOKEN, or run `relayflow up` "
                                       f"(it writes {token_file}).") from None
    return Client(url, token)


def _styled(status: str | None) -> str:
    status = status or "?"
    return f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _duration(node: dict[str, Any]) -> str:
    try:
        started = datetime.fromisoformat(node["started_at"])
        finished = datetime.fromisoformat(node["finished_at"]) if node.get("finished_at") else None
    except (KeyError, TypeError, ValueError):
        return ""
    if finished is None:
        return "…"
    return f"{(finished - started).total_seconds():.1f}s"


def _message(error: Any, *, first_line: bool = False) -> str:
    if isinstance(error, dict):
        error = error.get("message") or error.get("msg") or (error or None)
    text = "" if error is None else str(error)
    return text.strip().splitlines()[0] if first_line and text.strip() else text


def progress_cell(node: dict[str, Any]) -> Table | str:
    """A composite node's children as a bar and `done/total` (plus how many run now), else ""."""
    progress = node.get("progress")
    if not isinstance(progress, dict) or not progress.get("total"):
        return ""
    done, total = int(progress.get("done") or 0), int(progress["total"])
    running = int(progress.get("started") or 0) - done
    cell = Table.grid(padding=(0, 1))
    cell.add_row(ProgressBar(total=total, completed=min(done, total), width=PROGRESS_WIDTH),
                 f"{done}/{total}" + (f", {running} running" if running > 0 and node.get("status") == "delegated" else ""))
    return cell


def run_table(run: dict[str, Any], title: str | None = None) -> Table:
    """One run as a table of its nodes: status, attempts, time, error; a composite node (sub-workflow,
    batch...) is one row whose progress column shows how many of its child runs ended."""
    heading = f"{escape(title)} · " if title else ""
    table = Table(title=f"{heading}run {run.get('run_id')} · {_styled(run.get('status'))}", title_justify="left")
    nodes = run.get("nodes") or []
    composite = any("progress" in node for node in nodes)
    for column in ("node", "type", "status", "attempts", "time", *(["progress"] if composite else []), "error"):
        table.add_column(column, overflow="fold", max_width=60 if column == "error" else None)
    for node in nodes:
        table.add_row(escape(str(node.get("node_id"))), escape(str(node.get("type") or "")),
                      _styled(node.get("status")), str(node.get("attempts", 0)), _duration(node),
                      *([progress_cell(node)] if composite else []),
                      escape(_message(node.get("error"), first_line=True)))
    return table


def print_error(error: EngineError, title: str | None = None) -> None:
    """An API error, with one line per node/field at fault (422 answers)."""
    items = [item for item in getattr(error, "errors", None) or [] if isinstance(item, dict)]
    # the message of a 422 joins its items: list them instead, one per line
    summary = f"refused ({len(items)} problem{'s' if len(items) > 1 else ''}):" if items else error.message
    console.print(f"[bold red]error:[/] {escape(title + ': ') if title else ''}{escape(summary)}")
    for item in items:
        where = ".".join(str(p) for p in (item.get("node_id"), item.get("field")) if p) or "workflow"
        console.print(f"  • [bold]{escape(where)}[/]: {escape(str(item.get('message')))}")


def print_outcome(run: dict[str, Any], title: str | None = None) -> int:
    """The run's outputs, or its error naming the node; returns the exit code."""
    name = f"{title} (run {run.get('run_id')})" if title else f"run {run.get('run_id')}"
    status = run.get("status")
    if status == RunStatus.SUCCEEDED:
        console.print(f"[green]✔[/] {escape(name)} succeeded; outputs:")
        console.print_json(data=run.get("outputs") or {})
        return 0
    if status in ("failed", "cancelled"):
        error = run.get("error") or {}
        node = error.get("node_id") if isinstance(error, dict) else None
        where = f" at node [bold]{escape(str(node))}[/]" if node else ""
        console.print(f"[red]✘[/] {escape(name)} {status}{where}: {escape(_message(error) or status)}")
        return 1
    interrupt = run.get("interrupt") or {}
    waiting = f"; waiting for input at node {interrupt.get('node_id')}" if interrupt else ""
    console.print(f"[yellow]…[/] {escape(name)} is {status}{escape(waiting)}; "
                  f"see `relayflow status {run.get('run_id')}`")
    return 2


def embedded_urls() -> tuple[str | None, str | None]:
    """DATABASE_URL and REDIS_URL, else those of the embedded servers `relayflow up` runs on this
    data folder (read from its private embedded.json: `up` never prints their passwords)."""
    settings = get_settings()
    database_url, redis_url = settings.database_url, settings.redis_url
    if not (database_url and redis_url) and (settings.data_dir / "embedded.json").exists():
        found = EmbeddedServers(settings.data_dir).running_urls()
        if found:
            database_url, redis_url = database_url or found[0], redis_url or found[1]
    return database_url, redis_url


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
        while any(r.get("status") not in SETTLED_STATUSES for r in latest.values()):
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
