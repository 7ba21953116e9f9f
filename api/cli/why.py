"""`relayflow why RUN_ID`: what each node of a run that is not final waits for, in plain words.

Reads `GET /v1/runs/{run_id}/diagnosis` (engine/diagnosis.py decides it). Exit codes: 0 the run
ended (nothing waits); 2 it is live and the lines say what it waits for; 1 the API refused (an
unknown run); 3 the API could not answer.
"""
from __future__ import annotations

import json
import sys

import click
from rich.markup import escape

from api.cli.base import client_options, console, make_client, print_error
from engine.errors import EngineError, RunNotFound
from engine.statuses import FINAL_STATUSES

# How each cause reads in the first column.
LABELS = {"predecessors": "predecessors", "worker": "a worker", "retry": "a retry", "lease": "its lease",
          "answer": "an answer", "children": "child runs", "space_cap": "space cap", "deadline": "the deadline"}


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the API's diagnosis as JSON (for scripts).")
@client_options
def why(run_id: str, as_json: bool, url: str, token: str | None) -> None:
    """Say why RUN_ID is not moving: one line per node that is not final, naming what it waits for."""
    with make_client(url, token) as client:
        try:
            found = client.diagnose_run(run_id)
        except EngineError as exc:
            print_error(exc, f"run {run_id}")
            sys.exit(1 if isinstance(exc, RunNotFound) else 3)
    code = 0 if found.get("status") in FINAL_STATUSES else 2
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False, indent=2))
        sys.exit(code)
    console.print(escape(str(found.get("summary"))), soft_wrap=True)
    for node in found.get("nodes") or []:
        label = LABELS.get(str(node.get("waiting_for")), str(node.get("waiting_for")))
        # soft-wrapped: one line per node, whole, so it can be grepped
        console.print(f"[bold]{escape(str(node.get('node_id')))}[/] ({escape(str(node.get('status')))}) "
                      f"waits for [yellow]{escape(label)}[/]: {escape(str(node.get('detail')))}", soft_wrap=True)
    sys.exit(code)
