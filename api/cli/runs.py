"""`relayflow submit|watch|resume|cancel`: runs of registered workflows, through the HTTP API.

`watch` follows the run's event stream (Server-Sent Events), not polling. Exit codes: 0 the run
succeeded (or the request was accepted); 1 it failed or was cancelled, or the API refused; 2 it
has not ended (it waits for input, or `--sync` gave up waiting); 3 (`watch`) the API could not answer.
"""
from __future__ import annotations

import contextlib
import json
import shlex
import sys
import time
from typing import IO, Any, NoReturn

import click
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from api.cli.base import (
    client_options,
    console,
    make_client,
    print_error,
    print_outcome,
    run_table,
)
from api.cli.client import Client, parse_input
from api.cli.why import why
from engine.errors import EngineError, InvalidTransition
from engine.statuses import SETTLED_STATUSES, RunStatus

# Events after which the node table is fetched again (token chunks change no status).
_QUIET_EVENTS = frozenset({"node.chunk"})
# A composite node's child ended: its event carries the new counts, which the table takes at once;
# the run is fetched again at most this often for them (a batch of 10,000 items is 10,000 events).
PROGRESS_EVENT = "node.progress"
REFETCH_ON_PROGRESS_S = 1.0
_EXAMPLE_BY_TYPE: dict[str, Any] = {"string": "", "integer": 0, "number": 0, "boolean": False,
                                    "array": [], "object": {}}


def _parse_inputs(inputs: tuple[str, ...]) -> dict[str, Any]:
    try:
        return dict(parse_input(item) for item in inputs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-i/--input") from None


def resume_command(run_id: str, interrupt: dict[str, Any]) -> str:
    """The `relayflow resume` command line that answers `interrupt` (with a placeholder answer)."""
    data = interrupt.get("data") or {}
    head = f"relayflow resume {run_id} --event {interrupt.get('event_id')}"
    if interrupt.get("type") == "input":
        schema = data.get("schema") or {}
        properties = schema.get("properties") or {}
        # required fields first, in the form's order (stored JSON keeps no order of properties)
        names = [n for n in schema.get("required") or [] if n in properties]
        names += [n for n in properties if n not in names]
        example = {n: _EXAMPLE_BY_TYPE.get(str((properties[n] or {}).get("type")), "") for n in names}
        return f"{head} --data {shlex.quote(json.dumps(example))}"
    options = data.get("options") or []
    return f"{head} {shlex.quote(str(options[0]) if options else 'your answer')}"


def print_interrupt(run: dict[str, Any]) -> int:
    """What the run waits for (question and options, or the form) and how to answer; returns 2."""
    interrupt = run.get("interrupt") or {}
    data = interrupt.get("data") or {}
    lines = [f"Node [bold]{escape(str(interrupt.get('node_id')))}[/] asks "
             f"({escape(str(interrupt.get('type')))}, event {escape(str(interrupt.get('event_id')))}):"]
    if interrupt.get("type") == "input":
        schema = data.get("schema") or {}
        required = set(schema.get("required") or [])
        lines.append(escape(str(data.get("prompt") or "Fill in the form:")))
        for name, spec in (schema.get("properties") or {}).items():
            spec = spec if isinstance(spec, dict) else {}
            facts = [str(spec.get("type") or "any")] + (["required"] if name in required else [])
            about = f" — {spec['description']}" if spec.get("description") else ""
            lines.append(f"  • [bold]{escape(str(name))}[/] ({escape(', '.join(facts))}){escape(about)}")
    else:
        lines.append(f"[bold]{escape(str(data.get('question')))}[/]")
        for index, option in enumerate(data.get("options") or []):
            lines.append(f"  {index}. {escape(str(option))}")
        if data.get("options") and data.get("allow_other"):
            lines.append("  (or any other text)")
    console.print(Panel("\n".join(lines), title=f"run {run.get('run_id')} is waiting for input",
                        title_align="left", border_style="yellow", expand=False))
    console.print("Answer with:", soft_wrap=True)
    # soft-wrapped: the command stays one copy-pastable line in a narrow terminal
    console.print(f"  {escape(resume_command(str(run.get('run_id')), interrupt))}", soft_wrap=True)
    return 2


def report(run: dict[str, Any]) -> int:
    """The run's outcome, or what it waits for; returns the exit code (0, 1 or 2)."""
    if run.get("status") == RunStatus.INTERRUPTED and run.get("interrupt"):
        return print_interrupt(run)
    return print_outcome(run)


def _event_line(event: dict[str, Any]) -> str:
    at = str(event.get("created_at") or "")[11:19]
    detail = event.get("data") or {}
    if event.get("type") in ("node.failed", "node.retrying", "node.crashed", "run.failed"):
        message = detail.get("message") or detail.get("msg") if isinstance(detail, dict) else detail
        detail = f": {message}" if message else ""
    elif event.get("type") == PROGRESS_EVENT and isinstance(detail, dict):
        detail = f" {detail.get('done')}/{detail.get('total')}"
    elif isinstance(detail, dict) and detail.get("event_id"):
        detail = f" (event {detail['event_id']})"
    else:
        detail = ""
    node = f" {event['node_id']}" if event.get("node_id") else ""
    return f"{at} {event.get('type')}{node}{detail}"


def _take_progress(run: dict[str, Any], event: dict[str, Any]) -> bool:
    """Put a `node.progress` event's counts into the run's node; False if it names no such node."""
    data = event.get("data")
    data = data if isinstance(data, dict) else {}
    for node in run.get("nodes") or []:
        if node.get("node_id") == event.get("node_id") and isinstance(node.get("progress"), dict):
            node["progress"] = {**node["progress"], "done": data.get("done", 0), "total": data.get("total", 0)}
            return True
    return False


def watch_run(client: Client, run_id: str) -> dict[str, Any]:
    """Follow the run's event stream, showing its node table, until it ends or waits for input."""
    run, fetched = client.get_run(run_id), time.monotonic()
    last = Text("")
    asked: set[str] = set()  # interrupt event ids the stream has shown

    def view() -> Group:
        return Group(run_table(run), last)

    # not a terminal (CI, a pipe): no animation, one line per event and the final table
    live = Live(view(), console=console, refresh_per_second=8, vertical_overflow="visible") \
        if console.is_terminal else None
    with live or contextlib.nullcontext():
        for event in client.events(run_id, 0, keepalives=True):
            if event is not None:
                if isinstance(event.get("data"), dict) and event["type"] in ("node.interrupted", "run.interrupted"):
                    asked.add(str(event["data"].get("event_id")))
                if live is None:
                    console.print(escape(_event_line(event)), soft_wrap=True)
                else:
                    last = Text(_event_line(event), style="dim")
                if event["type"] in _QUIET_EVENTS:
                    continue
                if event["type"] == PROGRESS_EVENT and _take_progress(run, event) \
                        and time.monotonic() - fetched < REFETCH_ON_PROGRESS_S:
                    if live is not None:
                        live.update(view())
                    continue
            run, fetched = client.get_run(run_id), time.monotonic()
            if live is not None:
                live.update(view())
            pending = run.get("interrupt") or {}
            # waiting for an answer we have seen asked (or the stream went idle while it waits): stop
            if run.get("status") == RunStatus.INTERRUPTED and (event is None or pending.get("event_id") in asked):
                break
    if run.get("status") not in SETTLED_STATUSES:
        run = client.get_run(run_id)  # the stream ended: take the run as it is now
    if live is None:
        console.print(run_table(run))
    return run


@click.command()
@click.argument("workflow_id")
@click.option("-i", "--input", "inputs", multiple=True, metavar="KEY=VALUE",
              help="A run input; the value is read as JSON when it parses (n=3, tags='[\"a\"]'), else as text.")
@click.option("--idempotency-key", metavar="KEY",
              help="Submitting again with the same key returns the same run (another workflow's key: 409).")
@click.option("--version", "version", type=click.IntRange(min=1), help="Run this version (default: the latest).")
@click.option("--sync", is_flag=True, help="Wait for the run to end (or to wait for input), then show its outcome.")
@click.option("--wait", "wait_s", type=click.FloatRange(0, 300, min_open=True), metavar="SECONDS",
              help="With --sync: how long the server waits (default 30, at most 300).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON (for scripts).")
@client_options
def submit(workflow_id: str, inputs: tuple[str, ...], idempotency_key: str | None, version: int | None,
           sync: bool, wait_s: float | None, as_json: bool, url: str, token: str | None) -> None:
    """Start a run of WORKFLOW_ID and print its id; with --sync, exit by its outcome (0, 1, or 2 not ended)."""
    if wait_s is not None and not sync:
        raise click.UsageError("--wait only applies with --sync")
    values = _parse_inputs(inputs)
    with make_client(url, token) as client:
        try:
            answer = client.submit_run(workflow_id, values, idempotency_key, version=version,
                                       mode="sync" if sync else "async", wait_s=wait_s)
        except EngineError as exc:
            print_error(exc, f"workflow {workflow_id}")
            sys.exit(1)
    if as_json:
        click.echo(json.dumps(answer, ensure_ascii=False, indent=2))
    ended = "nodes" in answer  # sync mode answers the whole run once it has settled
    if not sync:
        if not as_json:
            console.print(f"Run {answer['run_id']} {answer.get('status')}; follow it with "
                          f"`relayflow watch {answer['run_id']}`", soft_wrap=True)
        sys.exit(0)
    if not ended:
        if not as_json:
            console.print(f"[yellow]…[/] run {answer['run_id']} is still {answer.get('status')}; "
                          f"follow it with `relayflow watch {answer['run_id']}`", soft_wrap=True)
        sys.exit(2)
    if as_json:
        sys.exit(0 if answer["status"] == RunStatus.SUCCEEDED else 2 if answer["status"] == RunStatus.INTERRUPTED else 1)
    sys.exit(report(answer))


@click.command()
@click.argument("run_id")
@client_options
def watch(run_id: str, url: str, token: str | None) -> None:
    """Follow a run live from its event stream; exit 0 succeeded, 1 failed/cancelled, 2 waits for input."""
    with make_client(url, token) as client:
        _watch_and_exit(client, run_id)


def _watch_and_exit(client: Client, run_id: str) -> NoReturn:
    """Follow the run to its outcome and exit with it (3 if the API cannot answer)."""
    try:
        final = watch_run(client, run_id)
    except EngineError as exc:
        print_error(exc, f"run {run_id}")
        sys.exit(3)
    except KeyboardInterrupt:
        console.print(f"Stopped watching; the run goes on: relayflow watch {run_id}", soft_wrap=True)
        sys.exit(130)
    sys.exit(report(final))


def _answer(answer: str | None, data_json: str | None, data_file: IO[str] | None,
            interrupt: dict[str, Any] | None) -> Any:
    given = [name for name, value in (("ANSWER", answer), ("--data", data_json), ("--data-file", data_file))
             if value is not None]
    if len(given) != 1:
        raise click.UsageError("give the answer once: ANSWER (text), --data JSON or --data-file FILE"
                               + (f" (got {' and '.join(given)})" if given else ""))
    if answer is not None and not (interrupt and interrupt.get("type") == "input"):
        return answer  # a question's answer is text
    raw, where = (answer, "ANSWER") if answer is not None else \
        (data_json, "--data") if data_json is not None else (data_file.read() if data_file else "", "--data-file")
    try:
        return json.loads(raw or "")
    except ValueError as exc:
        raise click.BadParameter(f"not JSON ({exc}); a form's answer is a JSON object such as "
                                 "'{\"reason\": \"late\"}'", param_hint=where) from None


@click.command()
@click.argument("run_id")
@click.argument("answer", required=False)
@click.option("--event", "event_id", metavar="EVENT_ID", help="The interrupt to answer (default: the one the run waits on).")
@click.option("--data", "data_json", metavar="JSON", help="The answer as JSON: a form's object, or {\"option_index\": 1}.")
@click.option("--data-file", type=click.File("r", encoding="utf-8"), help="Read the JSON answer from a file (- for stdin).")
@click.option("--watch", "then_watch", is_flag=True, help="Follow the run afterwards, and exit by its outcome.")
@client_options
def resume(run_id: str, answer: str | None, event_id: str | None, data_json: str | None,
           data_file: IO[str] | None, then_watch: bool, url: str, token: str | None) -> None:
    """Answer the question or form RUN_ID waits for: ANSWER as text, or --data/--data-file as JSON."""
    with make_client(url, token) as client:
        try:
            run = client.get_run(run_id)
            interrupt = run.get("interrupt")
            if event_id is None and not interrupt:
                console.print(f"[bold red]error:[/] run {run_id} is {run.get('status')}; it is not waiting "
                              "for input, so there is nothing to answer", soft_wrap=True)
                sys.exit(1)
            if interrupt and event_id not in (None, interrupt.get("event_id")):
                interrupt = None  # another event: its type is unknown here, the server judges the answer
            data = _answer(answer, data_json, data_file, interrupt)
            accepted = client.resume_run(run_id, event_id or str((interrupt or {}).get("event_id")), data)
        except EngineError as exc:
            _refused(exc, "answered", run_id)
        console.print(f"[green]✔[/] answered event {accepted.get('event_id')} of node "
                      f"[bold]{escape(str(accepted.get('node_id')))}[/]; run {run_id} is {accepted.get('status')}",
                      soft_wrap=True)
        if not then_watch:
            sys.exit(0)
        _watch_and_exit(client, run_id)


@click.command()
@click.argument("run_id")
@client_options
def cancel(run_id: str, url: str, token: str | None) -> None:
    """Cancel a queued, running or interrupted run."""
    with make_client(url, token) as client:
        try:
            client.cancel_run(run_id)
        except EngineError as exc:
            _refused(exc, "cancelled", run_id)
    console.print(f"[green]✔[/] run {run_id} cancelled", soft_wrap=True)


def _refused(exc: EngineError, action: str, run_id: str) -> NoReturn:
    """Say why the server refused to change the run (a conflict, or another error), and exit 1."""
    if isinstance(exc, InvalidTransition):
        console.print(f"[bold red]error:[/] not {action} (conflict): {escape(exc.message)}", soft_wrap=True)
    else:
        print_error(exc, f"run {run_id}")
    sys.exit(1)


COMMANDS = (submit, watch, resume, cancel, why)
