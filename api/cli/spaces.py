"""`relayflow spaces list|set-cap|set-retention`: the operator's view of spaces' shares and retention.

Like `relayflow tokens`, it talks to the database at DATABASE_URL directly (operator only: no
API token can change a space's cap or retention). See docs/configuration.md,
RELAYFLOW_SPACE_MAX_RUNNING_NODES and RELAYFLOW_RETENTION_DAYS (docs/operations.md "Retention").
"""
from __future__ import annotations

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from api.cli.tokens import _store, console
from engine import tokens as token_ops
from engine.errors import SpaceNotFound
from engine.settings import get_settings


@click.group()
def spaces() -> None:
    """List spaces with their share of the workers and retention; set a space's cap or retention."""


@spaces.command("list")
def list_() -> None:
    """Each space: its cap on running nodes, how many run now, how many wait for a slot, its retention."""
    default = get_settings().space_max_running_nodes
    with _store() as store:
        loads = store.catalog.space_loads()
        from engine.store.retention import RetentionStore  # the store's SQLAlchemy: only when used

        retentions = RetentionStore(store.lifecycle.engine).space_retentions()
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    for column in ("space", "cap", "running", "waiting", "retention"):
        table.add_column(column)
    for load in loads:
        cap = load.max_running_nodes
        shown = (f"{cap or 'none'} (own)" if cap is not None
                 else f"{default or 'none'} (RELAYFLOW_SPACE_MAX_RUNNING_NODES)")
        table.add_row(escape(load.id), shown, str(load.running_nodes), str(load.waiting_nodes),
                      _retention(retentions.get(load.id)))
    console.print(table)


@spaces.command("set-cap")
@click.argument("space")
@click.argument("cap", metavar="N|default")
def set_cap(space: str, cap: str) -> None:
    """Let SPACE run at most N nodes at once (0: no cap), or `default` for RELAYFLOW_SPACE_MAX_RUNNING_NODES."""
    if cap == "default":
        value: int | None = None
    else:
        try:
            value = int(cap)
        except ValueError:
            value = -1
        if value < 0:
            raise click.BadParameter(f"'{cap}' is not a cap; give a whole number >= 0 (0: no cap) or 'default'",
                                     param_hint="N")
    with _store() as store:
        token_ops.check_space_id(space)
        if not store.catalog.set_space_cap(space, value):
            raise SpaceNotFound(f"Space {space} not found; `relayflow spaces list` shows the spaces.")
    if value is None:
        console.print(f"[green]✔[/] space [bold]{escape(space)}[/] uses the default cap "
                      f"({get_settings().space_max_running_nodes or 'none'})")
    else:
        console.print(f"[green]✔[/] space [bold]{escape(space)}[/] runs at most "
                      f"{value if value else 'any number of'} nodes at once")


def _days(days: float) -> str:
    return "forever" if days == 0 else f"{days:g} days"


def _retention(own: float | None) -> str:
    """A space's retention as listed: its own, or the deployment's default."""
    if own is not None:
        return f"{_days(own)} (own)"
    return f"{_days(get_settings().retention_days)} (RELAYFLOW_RETENTION_DAYS)"


@spaces.command("set-retention")
@click.argument("space")
@click.argument("days", metavar="DAYS|default")
def set_retention(space: str, days: str) -> None:
    """Keep SPACE's ended runs DAYS days (a decimal; 0: forever), or `default` for RELAYFLOW_RETENTION_DAYS."""
    value: float | None = None
    if days != "default":
        try:
            value = float(days)
        except ValueError:
            value = -1.0
        if not 0 <= value < float("inf"):
            raise click.BadParameter(f"'{days}' is not a retention; give a number of days >= 0 (0: forever) "
                                     "or 'default'", param_hint="DAYS")
    with _store() as store:
        token_ops.check_space_id(space)
        from engine.store.retention import RetentionStore  # the store's SQLAlchemy: only when used

        if not RetentionStore(store.lifecycle.engine).set_space_retention(space, value):
            raise SpaceNotFound(f"Space {space} not found; `relayflow spaces list` shows the spaces.")
    console.print(f"[green]✔[/] space [bold]{escape(space)}[/] keeps its ended runs {_retention(value)}")
