"""`relayflow prompts push|list|show|diff|label`: the space's prompt library, through the HTTP API.

`push FILE` reads a prompt as YAML (key, name, description, tags, text or messages, variables,
model, message, labels) and creates it, or saves a new version when its content changed (based
on the latest version: a concurrent save elsewhere is refused, not overwritten).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import yaml
from rich import box
from rich.markup import escape
from rich.table import Table

from api.cli.base import client_options, console, make_client, print_error
from api.cli.client import Client
from engine.errors import EngineError, NotFound

_CONTENT = ("text", "messages", "variables", "model")


def _fail(error: EngineError) -> None:
    print_error(error)
    raise SystemExit(1)


def _path(key: str, *rest: str) -> str:
    return "/".join([f"/v1/prompts/{quote(key, safe='')}", *rest])


def _load(file: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise click.ClickException(f"cannot read {file}: {exc}") from None
    if not isinstance(doc, dict) or not doc.get("key"):
        raise click.ClickException(f"{file}: expected a mapping with at least `key` and `text` (or `messages`)")
    return doc


def _version_of(doc: dict[str, Any]) -> dict[str, Any]:
    version = {k: doc[k] for k in _CONTENT if doc.get(k) is not None}
    if doc.get("message"):
        version["message"] = doc["message"]
    return version


def _same(doc: dict[str, Any], current: dict[str, Any]) -> bool:
    mine = _version_of(doc)
    theirs = {k: current.get(k) for k in _CONTENT}
    normalised = {k: mine.get(k, [] if k == "variables" else None) for k in _CONTENT}
    # the server fills the variables' defaults: compare what the file names
    if isinstance(normalised["variables"], list) and isinstance(theirs["variables"], list):
        theirs["variables"] = [{k: v for k, v in t.items() if k in m} for m, t in
                               zip(normalised["variables"], theirs["variables"], strict=False)]
        if len(normalised["variables"]) != len(current.get("variables") or []):
            return False
    return normalised == theirs


def push_prompt(client: Client, doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Create the prompt, or save a new version if its content changed: (what happened, the prompt)."""
    key = str(doc["key"])
    try:
        current = client.call("GET", _path(key), params={"label": "latest"})
    except NotFound:
        body = {"key": key, "version": _version_of(doc), "tags": doc.get("tags") or [],
                "labels": doc.get("labels") or [], "description": doc.get("description") or ""}
        if doc.get("name"):
            body["name"] = doc["name"]
        return "created", client.call("POST", "/v1/prompts", body)
    if _same(doc, current["version"]):
        return "unchanged", current
    body = {**_version_of(doc), "base_version": current["latest_version"]}
    for field in ("name", "description"):
        if doc.get(field) is not None:
            body[field] = doc[field]
    saved = client.call("POST", _path(key, "versions"), body)
    for label in doc.get("labels") or []:
        client.call("PUT", _path(key, "labels", quote(str(label), safe="")), {"version": saved["latest_version"]})
    return "saved", saved


@click.group()
def prompts() -> None:
    """The space's prompt library: push, list, show, diff and label prompts."""


@prompts.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@client_options
def push(file: Path, url: str, token: str | None) -> None:
    """Create the prompt in FILE (YAML), or save it as a new version if it changed."""
    with make_client(url, token) as client:
        try:
            what, prompt = push_prompt(client, _load(file))
        except EngineError as exc:
            _fail(exc)
    console.print(f"[green]✔[/] {escape(prompt['key'])}: {what}, version {prompt['version']['number']} "
                  f"(latest {prompt['latest_version']})")


@prompts.command("list")
@click.option("--search", "-q", default=None, help="A substring of key, name, description or text.")
@click.option("--tag", default=None)
@click.option("--creator", default=None)
@click.option("--label", default=None)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100))
@client_options
def list_(search: str | None, tag: str | None, creator: str | None, label: str | None, limit: int, url: str,
          token: str | None) -> None:
    """List the space's prompts, newest first."""
    with make_client(url, token) as client:
        try:
            page = client.call("GET", "/v1/prompts", params={"q": search, "tag": tag, "creator": creator,
                                                              "label": label, "limit": limit})
        except EngineError as exc:
            _fail(exc)
    if not page["prompts"]:
        console.print("No prompts.")
        return
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    for column in ("key", "name", "latest", "labels", "creator", "tags"):
        table.add_column(column, overflow="fold")
    for p in page["prompts"]:
        labels = " ".join(f"{k}={v}" for k, v in p["labels"].items() if k != "latest")
        table.add_row(escape(p["key"]), escape(p["name"]), str(p["latest_version"]), escape(labels),
                      escape(p["creator"]), escape(" ".join(p["tags"])))
    console.print(table)


@prompts.command()
@click.argument("key")
@click.option("--version", "version", type=click.IntRange(min=1), default=None)
@click.option("--label", default=None, help="Default: production, else latest.")
@client_options
def show(key: str, version: int | None, label: str | None, url: str, token: str | None) -> None:
    """Show a prompt at a version or label."""
    with make_client(url, token) as client:
        try:
            prompt = client.call("GET", _path(key), params={"version": version, "label": label})
        except EngineError as exc:
            _fail(exc)
    shown = prompt["version"]
    labels = ", ".join(f"{k}→{v}" for k, v in prompt["labels"].items())
    console.print(f"[bold]{escape(prompt['key'])}[/] v{shown['number']} by {escape(shown['author'])} "
                  f"({escape(labels)})")
    if shown["message"]:
        console.print(f"[dim]{escape(shown['message'])}[/]")
    if shown["text"] is not None:
        click.echo(shown["text"])
    for message in shown["messages"] or []:
        console.print(f"[bold]{escape(message['role'])}[/]:")
        click.echo(message["text"])


@prompts.command()
@click.argument("key")
@click.argument("v1", type=click.IntRange(min=1))
@click.argument("v2", type=click.IntRange(min=1))
@client_options
def diff(key: str, v1: int, v2: int, url: str, token: str | None) -> None:
    """The unified diff between versions V1 and V2 of KEY."""
    with make_client(url, token) as client:
        try:
            found = client.call("GET", _path(key, "diff"), params={"from": v1, "to": v2})
        except EngineError as exc:
            _fail(exc)
    click.echo(found["diff"] or f"versions {v1} and {v2} have the same text", nl=not found["diff"])
    if found["changed"]:
        console.print(f"[dim]also changed: {', '.join(found['changed'])}[/]")


@prompts.command()
@click.argument("key")
@click.argument("label")
@click.argument("version", type=click.IntRange(min=1))
@client_options
def label(key: str, label: str, version: int, url: str, token: str | None) -> None:
    """Point LABEL of KEY at VERSION (a rollback is a label move)."""
    with make_client(url, token) as client:
        try:
            moved = client.call("PUT", _path(key, "labels", quote(label, safe="")), {"version": version})
        except EngineError as exc:
            _fail(exc)
    before = moved["previous_version"]
    console.print(f"[green]✔[/] {escape(key)}: {escape(label)} → {version}" + (f" (was {before})" if before else ""))
