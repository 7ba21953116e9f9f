"""`relayflow spaces list|set-cap`: the operator's view of fair share between spaces.

Like `relayflow tokens`, it talks to the database at DATABASE_URL directly (operator only: no
API token can change a space's cap). See docs/configuration.md, RELAYFLOW_SPACE_MAX_RUNNING_NODES.
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
    """List spaces with their share of the workers; set a space's cap on running nodes."""


@spaces.command("list")
def list_() -> None:
    """Each space: its cap on running nodes, how many run now, and how many wait for a slot."""
    default = get_settings().space_max_running_nodes
    with _store() as store:
        loads = store.catalog.space_loads()
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    for column in ("space", "cap", "running", "waiting"):
        table.add_column(column)
    for load in loads:
        cap = load.max_running_nodes
        shown = (f"{cap or 'none'} (own)" if cap is not None
                 else f"{default or 'none'} (RELAYFLOW_SPACE_MAX_RUNNING_NODES)")
        table.add_row(escape(load.id), shown, str(load.running_nodes), str(load.waiting_nodes))
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
