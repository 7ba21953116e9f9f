"""`relayflow retention run [--dry-run]`: one retention sweep now, or what it would delete.

Works on the database at DATABASE_URL directly, like `relayflow spaces` (operator only). The
workers sweep by themselves every RELAYFLOW_RETENTION_EVERY_S; this is for an operator who
wants the space back now, or wants to see what a new retention would delete before setting it.
"""
from __future__ import annotations

import click
from rich import box
from rich.table import Table

from api.cli.tokens import _store, console
from engine.settings import get_settings


@click.group()
def retention() -> None:
    """Delete ended runs older than their space's retention (docs/operations.md "Retention")."""


@retention.command("run")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted now.")
def run(dry_run: bool) -> None:
    """Sweep now: delete expired runs (with child runs, nodes, events, interrupts) in batches."""
    # Imported here: the store pulls in SQLAlchemy and psycopg (~0.5 s), which every other
    # `relayflow` command would pay at start-up, as `api.cli` imports this module
    from engine.retention import Retention

    settings = get_settings()
    with _store() as store:
        sweeper = Retention(store.lifecycle.engine, settings)
        if dry_run:
            expired = sweeper.expired()
            counts = {"runs (top-level)": expired.roots, "runs (all)": expired.runs, "nodes": expired.nodes,
                      "events": expired.events, "interrupts": expired.interrupts}
            title = "would be deleted (at most: a tree with a live run is kept)"
        else:
            report = sweeper.sweep()
            if not report.leader:
                raise click.ClickException("another process is sweeping now; try again in a moment")
            done = report.deleted
            counts = {"runs (top-level)": done.roots, "runs (all)": done.runs, "nodes": done.nodes,
                      "events": done.events, "interrupts": done.interrupts}
            title = f"deleted in {report.batches} batches, {report.elapsed_s:.1f}s"
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), title=title, title_justify="left")
    table.add_column("rows")
    table.add_column("count", justify="right")
    for name, count in counts.items():
        table.add_row(name, str(count))
    console.print(table)
