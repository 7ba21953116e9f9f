"""`relayflow tokens create|list|revoke` end to end: a subprocess on the test database makes
tokens the API accepts, lists them without secrets, and revokes them."""
from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.db import get_engine
from engine.settings import Settings
from engine.store import Store
from engine.tokens import hash_token
from tests.conftest import ROOT, settings_env

pytestmark = pytest.mark.integration

DEFINITION = {"nodes": [{"id": "hi", "type": "template", "config": {"template": "hi"}}],
              "outputs": {"text": "{{ hi.text }}"}}
TOKEN = re.compile(r"\brf_[A-Za-z0-9_-]{20,}")


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", "tokens", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """The environment of a `relayflow` command on this test's database (a wide terminal for tables)."""
    return {**settings_env(settings), "COLUMNS": "220"}


def _create(env: dict[str, str], *args: str) -> tuple[str, str]:
    done = _cli(env, "create", *args)
    assert done.returncode == 0, done.stderr + done.stdout
    found = TOKEN.findall(done.stdout)
    assert len(found) == 1, done.stdout
    return found[0], done.stdout


def _as(app: Any, token: str) -> Any:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def test_created_token_works_in_its_new_space_with_its_scopes(app: Any, env: dict[str, str], settings: Settings) -> None:
    # When the CLI creates tokens in a space that does not exist yet
    manager, out = _create(env, "--space", "acme", "--name", "ci", "--scope", "run", "--scope", "manage",
                           "--expires-in", "30d")
    runner, _ = _create(env, "--space", "acme", "--name", "bot", "--scope", "run", "--expires-in", "never")
    assert "acme" in out and "run, manage" in out and "not shown again" in out
    # Then the API accepts them, in that space, with those scopes
    created = _as(app, manager).post("/v1/workflows", json={"name": "wf", "definition": DEFINITION})
    assert created.status_code == 201, created.get_json()
    bot = _as(app, runner)
    assert bot.post("/v1/workflows", json={"name": "wf", "definition": DEFINITION}).status_code == 403
    assert [w["workflow_id"] for w in bot.get("/v1/workflows").get_json()["workflows"]] == \
        [created.get_json()["workflow_id"]]
    # and only hashes were stored, with the expiries asked for
    stored = {t.name: t for t in Store.from_engine(get_engine(settings)).catalog.list_tokens("acme")}
    assert stored["bot"].expires_at is None
    assert stored["ci"].expires_at is not None
    assert timedelta(days=29, hours=23) < stored["ci"].expires_at - datetime.now(UTC) <= timedelta(days=30)


def test_quiet_create_prints_only_the_token(app: Any, env: dict[str, str]) -> None:
    done = _cli(env, "create", "--name", "script", "--scope", "admin", "--expires-in", "12h", "--quiet")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert TOKEN.fullmatch(token)
    assert _as(app, token).get("/v1/tokens").get_json()["tokens"][0]["space_id"] == "default"


def test_list_shows_tokens_but_never_their_secrets(env: dict[str, str]) -> None:
    # Given tokens in two spaces
    first, _ = _create(env, "--space", "acme", "--name", "ci", "--scope", "run")
    second, _ = _create(env, "--space", "globex", "--name", "ops", "--scope", "admin", "--expires-in", "90m")
    # When listing every space, and one space
    everything = _cli(env, "list")
    acme = _cli(env, "list", "--space", "acme")
    # Then each row names its token, and no output holds a token or its hash
    assert everything.returncode == 0 and acme.returncode == 0, everything.stderr + acme.stderr
    for header in ("id", "name", "space", "scopes", "created", "expires", "last used", "revoked"):
        assert header in everything.stdout
    assert "ci" in everything.stdout and "ops" in everything.stdout and "globex" in everything.stdout
    assert "ops" not in acme.stdout and "globex" not in acme.stdout and "ci" in acme.stdout
    for output in (everything.stdout + everything.stderr, acme.stdout + acme.stderr):
        for token in (first, second):
            assert token not in output and hash_token(token) not in output
            assert hash_token(token)[:16] not in output
    assert "No tokens in space nobody." in _cli(env, "list", "--space", "nobody").stdout


def test_revoke_makes_the_token_401_and_twice_is_an_error(app: Any, env: dict[str, str]) -> None:
    token, out = _create(env, "--space", "acme", "--name", "ci", "--scope", "run")
    token_id = re.search(r"token (\d+)", out)
    assert token_id is not None, out
    client = _as(app, token)
    assert client.get("/v1/runs").status_code == 200
    # When it is revoked
    done = _cli(env, "revoke", token_id.group(1))
    assert done.returncode == 0 and "revoked" in done.stdout, done.stderr
    # Then the API refuses it, and the list shows when it was revoked
    refused = client.get("/v1/runs")
    assert refused.status_code == 401 and "revoked" in refused.get_json()["msg"]
    row = next(line for line in _cli(env, "list").stdout.splitlines() if " ci " in line)
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d\W*$", row), row
    again = _cli(env, "revoke", token_id.group(1))
    assert again.returncode == 1 and "already revoked" in again.stderr
    missing = _cli(env, "revoke", "999999")
    assert missing.returncode == 1 and "Token 999999 not found" in missing.stderr


def test_bad_options_are_refused_naming_them(env: dict[str, str]) -> None:
    bad_scope = _cli(env, "create", "--name", "x", "--scope", "deploy")
    assert bad_scope.returncode == 2 and "'deploy'" in bad_scope.stderr and "--scope" in bad_scope.stderr
    bad_duration = _cli(env, "create", "--name", "x", "--scope", "run", "--expires-in", "30x")
    assert bad_duration.returncode == 1 and "'30x' is not a duration" in bad_duration.stderr
    zero = _cli(env, "create", "--name", "x", "--scope", "run", "--expires-in", "0d")
    assert zero.returncode == 1 and "expires_in" in zero.stderr
    bad_space = _cli(env, "create", "--space", "a b", "--name", "x", "--scope", "run")
    assert bad_space.returncode == 1 and "'a b' is not a space id" in bad_space.stderr
    assert "No tokens." in _cli(env, "list").stdout


def test_without_database_url_it_says_how_to_get_one(env: dict[str, str]) -> None:
    bare = {k: v for k, v in env.items() if k != "DATABASE_URL"}
    for args in (("list",), ("revoke", "1"), ("create", "--name", "x", "--scope", "run")):
        done = _cli(bare, *args)
        assert done.returncode == 1, args
        assert "DATABASE_URL" in done.stderr and "relayflow up" in done.stderr, done.stderr
