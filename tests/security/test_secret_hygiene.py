"""Secret hygiene, attacked for real over HTTP against gunicorn and dramatiq workers: model keys
and header secrets never reach PostgreSQL, a space token, an error text or a log; the global
model registry and the health details need the operator scope, which no space admin can grant;
repeated bad tokens get 429."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from api.localstack.fake_llm import FakeLLM
from engine.db import get_engine
from engine.settings import Settings
from engine.store import Store
from engine.tokens import issue_token, revoke_token
from tests.conftest import ROOT, WebProcess, settings_env
from tests.integration.llm_fixtures import FAKE_KEY
from tests.integration.test_llm_node import llm_workflow
from tests.log_lines import log_events

pytestmark = pytest.mark.integration

LITERAL_KEY = "sk-literal-WRITTENINFILE-0123456789abcdef"
HEADER_SECRET = "hdr-SECRET-value-77aa99"


@pytest.fixture
def store(settings: Settings) -> Store:
    """The storage layer on this test's database."""
    return Store.from_engine(get_engine(settings))


@pytest.fixture
def models(model_dir: Path, fake_llm: FakeLLM) -> Path:
    """Two models with literal secrets in their file: one that answers, one whose provider fails
    and quotes every request header back in its error."""
    for model_id, upstream in (("literal", "echo"), ("leaky", "status=400+echo_headers")):
        doc = {"id": model_id, "name": f"Test {model_id}",
               "meta": {"protocol": "openai",
                        "conn_config": {"base_url": fake_llm.base_url, "model": upstream, "timeout": "10s",
                                        "api_key": LITERAL_KEY if model_id == "literal" else "${FAKE_LLM_KEY}",
                                        "custom": {"headers": {"X-Api-Key": HEADER_SECRET}}}}}
        (model_dir / f"{model_id}.yaml").write_text(yaml.safe_dump(doc))
    return model_dir


@pytest.fixture
def served(models: Path, web_server: str, start_worker: Callable[..., Any]) -> str:
    """gunicorn and one worker process, both reading the model folder (started after it is written)."""
    start_worker(processes=1, threads=2)
    return web_server


def _http(url: str, token: str | None, **kwargs: Any) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30.0, **kwargs)


def _run(http: httpx.Client, definition: dict[str, Any]) -> dict[str, Any]:
    created = http.post("/v1/workflows", json={"name": "wf", "definition": definition})
    assert created.status_code == 201, created.text
    started = http.post(f"/v1/workflows/{created.json()['workflow_id']}/runs", json={"inputs": {}})
    assert started.status_code == 202, started.text
    deadline = time.monotonic() + 90
    while True:
        run = http.get(f"/v1/runs/{started.json()['run_id']}").json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return dict(run)
        assert time.monotonic() < deadline, run
        time.sleep(0.2)


def _every_table(settings: Settings) -> str:
    """Every row of every table of the test database, as text."""
    url = (settings.database_url or "").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as db:
        tables = [r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return "\n".join(str(row) for t in tables for row in db.execute(f'SELECT * FROM "{t}"'))


def _space_admin(store: Store, space: str = "acme") -> str:
    return issue_token(store, space, f"{space}-admin", ("admin",), create_space=True).token


def test_no_literal_key_or_header_secret_is_stored_in_postgres_yet_every_worker_uses_them(
        served: str, token: str, settings: Settings, fake_llm: FakeLLM) -> None:
    # Given model files that write a key and a header value literally, refreshed by the operator
    with _http(served, token) as http:
        refreshed = http.post("/v1/models/refresh")
        assert refreshed.status_code == 200, refreshed.text
        assert sorted(refreshed.json()["data"]["new_models"]) == ["leaky", "literal"]
        # When a worker process calls the model
        run = _run(http, llm_workflow("literal"))
    # Then it used the file's key and header (read from its own copy of the files) ...
    assert run["status"] == "succeeded", run
    sent = {k.lower(): v for k, v in fake_llm.headers[-1].items()}
    assert sent["authorization"] == f"Bearer {LITERAL_KEY}" and sent["x-api-key"] == HEADER_SECRET
    # ... and no table of the database holds either secret, nor a part of the key
    everything = _every_table(settings)
    for secret in (LITERAL_KEY, LITERAL_KEY[3:20], HEADER_SECRET):
        assert secret not in everything
    assert "read from this machine's model file" in everything  # the blank the generation holds instead


def test_a_header_secret_echoed_by_a_failing_provider_leaks_nowhere(
        served: str, token: str, settings: Settings, tmp_path: Path) -> None:
    # Given a model whose provider answers 400 quoting every request header (key and custom header)
    with _http(served, token) as http:
        assert http.post("/v1/models/refresh").status_code == 200
        # When a run calls it
        run = _run(http, llm_workflow("leaky"))
        texts = [http.get(f"/v1/runs/{run['run_id']}").text,
                 http.get(f"/v1/runs/{run['run_id']}/events", params={"stream": "false"}).text,
                 http.get("/v1/runs", params={"limit": 50}).text]
    # Then neither the header value nor the key is in any answer, stored row or log line ...
    texts += [_every_table(settings)] + [p.read_text(errors="replace") for p in tmp_path.glob("*.log")]
    for text in texts:
        for secret in (HEADER_SECRET, FAKE_KEY, FAKE_KEY[4:20]):
            assert secret not in text
    # ... while the node's error still gives the provider's message, the secrets masked in it
    message = run["error"]["message"]
    assert run["status"] == "failed" and "request headers" in message and "Bearer ***" in message, message
    # ... and the worker logged the failure once per attempt, with the ids and the masked message
    worker_log = tmp_path / "worker0.log"
    failed = log_events(worker_log, "node.failed")
    attempts = run["nodes"][0]["attempts"]
    assert len(failed) == 1 and len(log_events(worker_log, "node.retry_scheduled")) == attempts - 1, \
        worker_log.read_text()
    assert {k: failed[0][k] for k in ("run_id", "node_id", "attempt", "space_id", "outcome", "code")} == {
        "run_id": run["run_id"], "node_id": "ask", "attempt": attempts, "space_id": "default",
        "outcome": "run_failed", "code": run["error"]["code"]}, failed[0]
    assert "Bearer ***" in failed[0]["error"], failed[0]


def test_a_space_token_sees_no_key_fragment_base_url_header_or_path_in_the_model_list(
        served: str, token: str, store: Store, fake_llm: FakeLLM, models: Path) -> None:
    with _http(served, token) as operator:
        assert operator.post("/v1/models/refresh").status_code == 200
        as_operator = operator.get("/v1/models")
    # When a space admin lists the models
    with _http(served, _space_admin(store)) as admin:
        listed = admin.get("/v1/models")
    # Then it sees what an author needs, and nothing of how they are reached
    assert listed.status_code == 200
    shown = {m["id"]: m for m in listed.json()["models"]}
    assert set(shown) == {"leaky", "literal"} and shown["literal"]["protocol"] == "openai"
    assert shown["literal"].get("conn_config") is None and shown["literal"].get("source") is None
    for leak in (fake_llm.base_url, str(models), "X-Api-Key", HEADER_SECRET, "sk-", LITERAL_KEY[-4:], "***"):
        assert leak not in listed.text
    # And the operator sees base URLs and paths, still never a key or a header value
    conn = {m["id"]: m for m in as_operator.json()["models"]}["literal"]
    assert conn["conn_config"]["base_url"] == fake_llm.base_url and conn["source"].startswith(str(models))
    for leak in (HEADER_SECRET, LITERAL_KEY, "sk-l***"):
        assert leak not in as_operator.text


def test_a_space_admin_can_neither_refresh_the_global_registry_nor_grant_the_operator_scope(
        served: str, store: Store, settings: Settings) -> None:
    with _http(served, _space_admin(store)) as admin:
        # When a space admin refreshes the registry every space shares
        refused = admin.post("/v1/models/refresh")
        # Then it is refused naming the scope
        assert refused.status_code == 403 and "'operator'" in refused.json()["msg"]
        # And it cannot make itself an operator token either
        for scopes in (["operator"], ["admin", "operator"]):
            granted = admin.post("/v1/tokens", json={"name": "escalate", "scopes": scopes})
            assert granted.status_code == 403, granted.text
            assert "'operator' scope cannot be granted" in granted.json()["msg"]
        assert "operator" not in admin.get("/v1/tokens").text
    # While someone with database access makes one with the CLI, and it may refresh
    made = subprocess.run([sys.executable, "-m", "api.cli", "tokens", "create", "--space", "ops", "--name", "ops",
                           "--operator", "--quiet"], cwd=ROOT, env=settings_env(settings), capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    with _http(served, made.stdout.strip()) as operator:
        assert operator.post("/v1/models/refresh").status_code == 200


def test_healthz_shows_no_cross_space_details_without_an_operator_token(served: str, token: str,
                                                                       store: Store) -> None:
    with _http(served, None) as anonymous, _http(served, _space_admin(store)) as admin, \
            _http(served, token) as operator:
        # When anyone asks, or a space admin
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        assert admin.get("/healthz").json() == {"status": "ok"}
        # Then only liveness; the operator sees the queue and node counts
        details = operator.get("/healthz").json()
        assert details["postgres"] == "ok" and "queue_depth" in details and "nodes" in details


@pytest.fixture
def limited_web(start_web: Callable[..., WebProcess]) -> str:
    """gunicorn (2 processes) with a failed-authentication limit of 6 per 30 s."""
    return start_web({"RELAYFLOW_AUTH_FAILURE_LIMIT": "6", "RELAYFLOW_AUTH_FAILURE_WINDOW_S": "30"}, workers=2).url


def test_repeated_bad_tokens_from_one_address_get_429_while_other_addresses_go_on(
        limited_web: str, token: str, store: Store) -> None:
    revoked = issue_token(store, "acme", "old", ("run",), create_space=True)
    revoke_token(store, revoked.token_id, None)
    bad = ["rf_guess1", "rf_guess2", revoked.token, "rf_guess3", "", "rf_guess4"]  # unknown, revoked, malformed
    # (the limit counts in fixed 30 s windows: start early in one, so all 6 failures fall in it)
    if time.time() % 30 > 15:
        time.sleep(30 - time.time() % 30 + 0.2)
    # When one address sends 6 bad tokens (over fresh connections: both gunicorn processes see some)
    for guess in bad:
        with _http(limited_web, None) as http:
            answer = http.get("/v1/workflows", headers={"Authorization": f"Bearer {guess}" if guess else "Basic x"})
            assert answer.status_code == 401
    # Then every further attempt from that address gets 429 with Retry-After, whichever process answers
    for attempt in ("rf_guess5", "rf_guess6", "rf_guess7", "rf_guess8"):
        with _http(limited_web, attempt) as http:
            blocked = http.get("/v1/workflows")
        assert blocked.status_code == 429, blocked.text
        assert 1 <= int(blocked.headers["Retry-After"]) <= 30
        assert "Too many failed authentication attempts" in blocked.json()["msg"]
    # While a valid token from another address is served
    with _http(limited_web, token, transport=httpx.HTTPTransport(local_address="127.0.0.2")) as elsewhere:
        assert elsewhere.get("/v1/workflows").status_code == 200


def test_generations_stored_before_the_upgrade_lose_their_literal_keys(database_url: str) -> None:
    from alembic import command

    from engine.db import alembic_config

    # Given a generation stored, keys and all, by a release before this one
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "0003")
    doc = {"id": "old", "name": "Old", "meta": {"protocol": "openai", "conn_config": {
        "model": "m", "api_key": LITERAL_KEY, "custom": {"headers": {"X-Api-Key": HEADER_SECRET}}}}}
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as db:
        db.execute("INSERT INTO model_generations (models) VALUES (%s::jsonb)", [json.dumps({"old": doc})])
    # When the database is upgraded
    command.upgrade(cfg, "head")
    # Then the stored generation keeps the model, not its secrets
    with psycopg.connect(url) as db:
        stored = str(db.execute("SELECT models FROM model_generations").fetchall())
    assert "'old'" in stored and LITERAL_KEY not in stored and HEADER_SECRET not in stored
