"""`relayflow tokens create|list|revoke`: the bootstrap admin tool for personal access tokens.

It talks to the database at DATABASE_URL directly (no API, no token needed), so it can make the
first admin token of a space.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from api.cli.base import embedded_urls
from engine import tokens as token_ops
from engine.errors import EngineError
from engine.settings import get_settings

if TYPE_CHECKING:
    from engine.store import Store

console = Console(highlight=False)


@contextmanager
def _store() -> Iterator[Store]:
    """The store at DATABASE_URL; engine and database errors become one clear CLI error."""
    # Imported here: SQLAlchemy costs a second at start-up that the client commands do not need.
    from sqlalchemy.exc import SQLAlchemyError

    from engine.db import get_engine
    from engine.store import Store

    settings = get_settings()
    database_url, _ = embedded_urls()
    if not database_url:
        raise click.ClickException(
            "`relayflow tokens` works on the database directly: set DATABASE_URL=postgresql://user:pw@host/db. "
            "With the embedded servers of a running `relayflow up`, it is found by itself (run it as the same "
            "user, with the same RELAYFLOW_DATA_DIR).")
    try:
        yield Store.from_engine(get_engine(settings.model_copy(update={"database_url": database_url})))
    except EngineError as exc:
        raise click.ClickException(exc.message) from None
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise click.ClickException(f"the database at DATABASE_URL refused: {first} "
                                   "(is it up, and migrated with `relayflow migrate`?)") from None


def _when(moment: datetime | None, empty: str = "-", zone: str = " UTC") -> str:
    if moment is None:
        return empty
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") + zone


@click.group()
def tokens() -> None:
    """Create, list and revoke personal access tokens (on the database at DATABASE_URL)."""


@tokens.command()
@click.option("--space", default=token_ops.DEFAULT_SPACE, show_default=True,
              help="The space the token acts in (created if missing).")
@click.option("--name", required=True, help="What the token is for (e.g. ci, alice-laptop).")
@click.option("--user", default=None, help="The person the token acts for (a prompt's creator); default: its name.")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(token_ops.SCOPES),
              help="Repeat for several: run (start/cancel/resume runs), manage (workflows), admin (all of "
                   "the space), operator (the shared model registry and health details).")
@click.option("--operator", "operator", is_flag=True, help="Add the operator scope (same as --scope operator).")
@click.option("--expires-in", default="90d", show_default=True, metavar="DURATION",
              help="Lifetime such as 30d, 12h, 90m, or 'never'.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the token (for scripts).")
def create(space: str, name: str, user: str | None, scopes: tuple[str, ...], operator: bool, expires_in: str,
           quiet: bool) -> None:
    """Create a token and print it once: it is stored only as a hash."""
    if operator:
        scopes = (*scopes, token_ops.OPERATOR)
    if not scopes:
        raise click.UsageError("give --scope at least once (or --operator)")
    with _store() as store:
        issued = token_ops.issue_token(store, space, name, scopes, token_ops.parse_duration(expires_in),
                                       create_space=True, owner=user)
    if quiet:
        click.echo(issued.token)
        return
    console.print(f"[green]✔[/] token {issued.token_id} [bold]{escape(issued.name)}[/] in space "
                  f"[bold]{escape(issued.space_id)}[/] for user [bold]{escape(issued.owner)}[/], "
                  f"scopes {', '.join(issued.scopes)}, "
                  f"expires {_when(issued.expires_at, 'never')}")
    console.print("Copy it now, it is not shown again:")
    click.echo(issued.token)


@tokens.command("list")
@click.option("--space", default=None, help="Only this space's tokens (default: every space).")
def list_(space: str | None) -> None:
    """List tokens: id, name, space, scopes, dates and whether revoked (never the token or its hash)."""
    with _store() as store:
        found = token_ops.list_tokens(store, space)
    if not found:
        console.print("No tokens" + (f" in space {escape(space)}." if space else "."))
        return
    # light borders: the nine columns fit a 90-column terminal
    table = Table(caption="Times in UTC", caption_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    table.add_column("id", no_wrap=True)
    for column in ("name", "owner", "space", "scopes"):
        table.add_column(column, overflow="fold", min_width=6)
    for column in ("created", "expires", "last used", "revoked"):
        table.add_column(column, min_width=10)  # a narrow terminal wraps the time under the date
    now = datetime.now(UTC)
    for info in found:
        expires = _when(info.expires_at, "never", zone="")
        if info.expires_at is not None and info.expires_at <= now:
            expires = f"[red]{expires} expired[/]"
        table.add_row(str(info.id), escape(info.name), escape(info.owner), escape(info.space_id), " ".join(info.scopes),
                      _when(info.created_at, zone=""), expires, _when(info.last_used_at, zone=""),
                      f"[red]{_when(info.revoked_at, zone='')}[/]" if info.revoked_at else "-")
    console.print(table)


@tokens.command()
@click.argument("token_id", type=click.IntRange(min=1))
def revoke(token_id: int) -> None:
    """Revoke the token with id TOKEN_ID (see `relayflow tokens list`): it answers 401 from now on."""
    with _store() as store:
        revoked_at = token_ops.revoke_token(store, token_id, None)
    _announce(token_id)
    console.print(f"[green]✔[/] token {token_id} revoked at {_when(revoked_at)}")


def _announce(token_id: int) -> None:
    """Tell the web processes at once (they would refuse the token within RELAYFLOW_TOKEN_RECHECK_S anyway)."""
    _, redis_url = embedded_urls()
    if not redis_url:
        return
    import redis

    from engine.token_cache import announce_revocation

    client = redis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        announce_revocation(client, get_settings().queue_name, token_id)
    finally:
        client.close()
