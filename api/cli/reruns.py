"""`relayflow rerun`: rerun an ended run from a node, or a workflow's failed runs of a time range in bulk.

Exit codes as the other run commands (api/cli/runs.py): 0 accepted (or, with --watch, the rerun
succeeded); 1 the API refused or the rerun failed; 2 it waits for input; 3 the API could not answer.
"""
from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.markup import escape

from api.cli.base import client_options, console, make_client, print_error
from api.cli.client import parse_input
from api.cli.runs import _watch_and_exit
from engine.errors import EngineError


def _pairs(items: tuple[str, ...], hint: str) -> dict[str, Any]:
    try:
        return dict(parse_input(item) for item in items)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


@click.command()
@click.argument("run_id", required=False)
@click.option("--from", "from_node", metavar="NODE",
              help="Rerun from this node (with --workflow: default each run's failed node).")
@click.option("-i", "--input", "inputs", multiple=True, metavar="KEY=VALUE",
              help="Replace a run input (all of the source's inputs are kept otherwise).")
@click.option("--override-input", "override_inputs", multiple=True, metavar="KEY=VALUE",
              help="Replace a rendered input of the --from node.")
@click.option("--model", metavar="MODEL", help="An LLM --from node: answer with this registry model.")
@click.option("--prompt-version", type=click.IntRange(min=1), metavar="N",
              help="An LLM --from node with a library prompt: use version N of its prompt.")
@click.option("--watch", "then_watch", is_flag=True, help="Follow the rerun, and exit by its outcome.")
@click.option("--workflow", "workflow_id", metavar="W", help="Bulk: rerun W's failed runs of --since..--until.")
@click.option("--since", metavar="ISO_TIME", help="Bulk: runs created at or after this time.")
@click.option("--until", metavar="ISO_TIME", help="Bulk: runs created before this time.")
@click.option("--status", type=click.Choice(["failed", "cancelled"]), default="failed", show_default=True,
              help="Bulk: which ended runs.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="Bulk: at most this many.")
@click.option("--dry-run", is_flag=True, help="Bulk: count what would be rerun; start nothing.")
@click.option("--again", is_flag=True, help="Bulk: rerun sources an earlier call of this range already reran.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON (for scripts).")
@client_options
def rerun(run_id: str | None, from_node: str | None, inputs: tuple[str, ...], override_inputs: tuple[str, ...],
          model: str | None, prompt_version: int | None, then_watch: bool, workflow_id: str | None,
          since: str | None, until: str | None, status: str, limit: int, dry_run: bool, again: bool,
          as_json: bool, url: str, token: str | None) -> None:
    """Rerun RUN_ID from --from NODE (nodes before it reuse their outcomes), or, with --workflow, every
    failed run of a time range (--dry-run first to count them)."""
    if workflow_id is not None:
        if run_id is not None or then_watch or inputs or override_inputs or model or prompt_version:
            raise click.UsageError("--workflow reruns in bulk: give no RUN_ID, and only --from, --since, --until, "
                                   "--status, --limit, --dry-run, --again")
        if not since or not until:
            raise click.UsageError("--workflow needs --since and --until (ISO times)")
        _bulk(workflow_id, {"since": since, "until": until, "status": status, "limit": limit, "dry_run": dry_run,
                            "again": again, **({"from": from_node} if from_node else {})}, as_json, url, token)
    if run_id is None or from_node is None:
        raise click.UsageError("give RUN_ID and --from NODE (or --workflow W --since T --until T for a bulk rerun)")
    body: dict[str, Any] = {"from_node": from_node}
    if inputs:
        body["inputs"] = _pairs(inputs, "-i/--input")
    overrides: dict[str, Any] = {}
    if override_inputs:
        overrides["inputs"] = _pairs(override_inputs, "--override-input")
    if model:
        overrides["model"] = model
    if prompt_version is not None:
        overrides["prompt_version"] = prompt_version
    if overrides:
        body["overrides"] = overrides
    with make_client(url, token) as client:
        try:
            answer = client.call("POST", f"/v1/runs/{run_id}/rerun", body)
        except EngineError as exc:
            print_error(exc, f"run {run_id}")
            sys.exit(1)
        if as_json:
            click.echo(json.dumps(answer, ensure_ascii=False, indent=2))
        else:
            reused = ", ".join(answer.get("reused") or []) or "none"
            console.print(f"[green]✔[/] run {answer['run_id']} reruns {run_id} from [bold]{escape(from_node)}[/] "
                          f"(reused: {escape(reused)})", soft_wrap=True)
        if not then_watch:
            sys.exit(0)
        _watch_and_exit(client, str(answer["run_id"]))


def _bulk(workflow_id: str, body: dict[str, Any], as_json: bool, url: str, token: str | None) -> None:
    with make_client(url, token) as client:
        try:
            answer = client.call("POST", f"/v1/workflows/{workflow_id}/reruns", body)
        except EngineError as exc:
            print_error(exc, f"workflow {workflow_id}")
            sys.exit(1)
    if as_json:
        click.echo(json.dumps(answer, ensure_ascii=False, indent=2))
        sys.exit(0)
    verb = "would rerun" if body["dry_run"] else "reran"
    console.print(f"{verb} {answer['count']} run(s) of {workflow_id}; skipped {answer.get('skipped', 0)}",
                  soft_wrap=True)
    for item in answer.get("runs") or []:
        line = item if isinstance(item, str) else f"{item['source_run_id']} -> {item['run_id']} (from {item['from_node']})"
        console.print(f"  {escape(line)}", soft_wrap=True)
    for refusal in answer.get("refusals") or []:
        console.print(f"  [yellow]skipped[/] {refusal['source_run_id']}: {escape(refusal['reason'])}", soft_wrap=True)
    sys.exit(0)
