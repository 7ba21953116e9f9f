"""Tenancy and tokens over the API: every failure to authenticate is a 401 saying why, a missing
scope is a 403, and a token never sees another space's objects (404, as if they did not exist)."""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.db import get_engine
from engine.settings import Settings
from engine.store import Store
from engine.tokens import hash_token, issue_token

pytestmark = pytest.mark.integration

DEFINITION = {"inputs": {"name": {"type": "string", "default": "x"}},
              "nodes": [{"id": "hi", "type": "template", "config": {"template": "hi {{ inputs.name }}"}}],
              "outputs": {"text": "{{ hi.text }}"}}


@pytest.fixture
def store(settings: Settings) -> Store:
    """The storage layer on this test's database."""
    return Store.from_engine(get_engine(settings))


def _client(app: Any, token: str | None) -> Any:
    client = app.test_client()
    if token is not None:
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def _token(store: Store, space: str, *scopes: str, **kwargs: Any) -> str:
    return issue_token(store, space, f"{space}-{'-'.join(scopes)}", scopes, create_space=True, **kwargs).token


# -- 401: each way of not being authenticated, each with its own message ----------------------

def test_each_authentication_failure_is_401_with_its_own_message(app: Any, store: Store) -> None:
    # Given a revoked token and an expired one (its expiry stored in the past)
    revoked = issue_token(store, "acme", "old", ("admin",), create_space=True)
    store.catalog.revoke_token(revoked.token_id, None)
    expired = "rf_expired-token-for-the-test"
    store.catalog.insert_token("acme", "expired", hash_token(expired), ["admin"],
                               datetime.now(UTC) - timedelta(seconds=1))
    plain = app.test_client()
    cases = {
        "missing": {},
        "basic": {"Authorization": "Basic x"},
        "bearer alone": {"Authorization": "Bearer"},
        "unknown": {"Authorization": "Bearer rf_not-a-token-of-ours"},
        "revoked": {"Authorization": f"Bearer {revoked.token}"},
        "expired": {"Authorization": f"Bearer {expired}"},
    }
    # When each calls a /v1 route
    messages = {}
    for case, headers in cases.items():
        response = plain.get("/v1/workflows", headers=headers)
        # Then each is 401 with an {code, msg} body and the Bearer challenge
        assert response.status_code == 401, case
        body = response.get_json()
        assert body["code"] == 4010 and body["msg"], case
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), case
        messages[case] = body["msg"]
    assert "Missing Authorization header" in messages["missing"]
    assert messages["basic"] == messages["bearer alone"] and "Bearer <token>" in messages["basic"]
    assert "Unknown token" in messages["unknown"]
    assert "revoked" in messages["revoked"]
    assert "expired" in messages["expired"]
    assert len({messages[c] for c in ("missing", "basic", "unknown", "revoked", "expired")}) == 5


def test_a_token_stops_working_when_its_expiry_passes(app: Any, store: Store) -> None:
    # Given a token that lives one second
    token = _token(store, "acme", "run", expires_in=timedelta(seconds=1))
    client = _client(app, token)
    assert client.get("/v1/runs").status_code == 200
    # When the second has passed, then it is refused as expired
    time.sleep(1.2)
    response = client.get("/v1/runs")
    assert response.status_code == 401 and "expired" in response.get_json()["msg"]


# -- 403: a valid token without the scope ----------------------------------------------------

def test_a_run_only_token_cannot_create_workflows_and_only_admin_creates_tokens(app: Any, store: Store) -> None:
    runner = _client(app, _token(store, "acme", "run"))
    manager = _client(app, _token(store, "acme", "manage", "run"))
    response = runner.post("/v1/workflows", json={"name": "wf", "definition": DEFINITION})
    assert response.status_code == 403 and "'manage'" in response.get_json()["msg"]
    for client in (runner, manager):
        created = client.post("/v1/tokens", json={"name": "sneaky", "scopes": ["admin"]})
        assert created.status_code == 403 and "'admin'" in created.get_json()["msg"]
        assert client.get("/v1/tokens").status_code == 403
    # and reading is allowed to any valid token of the space
    assert runner.get("/v1/workflows").status_code == 200
    assert manager.post("/v1/workflows", json={"name": "wf", "definition": DEFINITION}).status_code == 201


def test_unknown_scopes_are_refused_by_name(app: Any, store: Store) -> None:
    admin = _client(app, _token(store, "acme", "admin"))
    response = admin.post("/v1/tokens", json={"name": "x", "scopes": ["run", "deploy"]})
    assert response.status_code == 422
    body = response.get_json()
    assert "'deploy'" in body["msg"] and body["errors"][0]["field"] == "scopes"
    assert admin.post("/v1/tokens", json={"name": "x", "scopes": []}).status_code == 422
    assert len(admin.get("/v1/tokens").get_json()["tokens"]) == 1


# -- cross-space: B never reads nor changes A's objects ----------------------------------------

# (method, path template, json body or None). Placeholders are keys of the `space_a` fixture's
# ids; add a row for each route that takes an id (strings in bodies are formatted too).
CROSS_SPACE_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/v1/workflows/{workflow_id}", None),
    ("PUT", "/v1/workflows/{workflow_id}", {"definition": DEFINITION}),
    ("POST", "/v1/workflows/{workflow_id}/publish", {}),
    ("POST", "/v1/workflows/{workflow_id}/runs", {"inputs": {}}),
    ("POST", "/v1/workflows/{workflow_id}/runs", {"inputs": {}, "version": 1}),
    ("GET", "/v1/runs/{run_id}", None),
    ("POST", "/v1/runs/{run_id}/cancel", None),
    ("POST", "/v1/tokens/{token_id}/revoke", None),
    ("POST", "/v1/runs/{run_id}/resume", {"event_id": "e1", "data": "yes"}),
    ("GET", "/v1/runs/{run_id}/events", None),
    ("POST", "/v1/workflow/run", {"workflow_id": "{workflow_id}", "parameters": {}}),
    ("POST", "/v1/workflow/run", {"workflow_id": "{workflow_id}", "parameters": "{{}}", "is_async": True}),
    ("POST", "/v1/workflow/stream_run", {"workflow_id": "{workflow_id}", "parameters": {}}),
    ("POST", "/v1/workflow/stream_resume", {"workflow_id": "{workflow_id}", "event_id": "{run_id}/e1",
                                            "resume_data": "yes", "interrupt_type": 2}),
    ("GET", "/v1/workflow/get_run_history?workflow_id={workflow_id}&execute_id={run_id}", None),
    ("GET", "/v1/workflows/{workflow_id}/run_histories/{run_id}", None),
]


def _fill(template: Any, ids: dict[str, str]) -> Any:
    if isinstance(template, str):
        return template.format(**ids)
    if isinstance(template, dict):
        return {k: _fill(v, ids) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, ids) for v in template]
    return template


@pytest.fixture
def space_a(app: Any, store: Store) -> dict[str, Any]:
    """Space A with a workflow, a queued run and a second token; returns A's client and ids."""
    admin_token = _token(store, "space-a", "admin")
    client = _client(app, admin_token)
    workflow_id = client.post("/v1/workflows", json={"name": "a-wf", "definition": DEFINITION}).get_json()["workflow_id"]
    run = client.post(f"/v1/workflows/{workflow_id}/runs", json={"inputs": {}, "idempotency_key": "k1"})
    assert run.status_code == 202, run.get_json()
    other = client.post("/v1/tokens", json={"name": "a-ci", "scopes": ["run"]}).get_json()
    return {"client": client, "ids": {"workflow_id": workflow_id, "run_id": run.get_json()["run_id"],
                                      "token_id": str(other["token_id"])}}


@pytest.fixture
def space_b(app: Any, store: Store) -> Any:
    """A client of space B holding every scope."""
    return _client(app, _token(store, "space-b", "admin"))


@pytest.mark.parametrize(("method", "template", "body"), CROSS_SPACE_ROUTES,
                         ids=[f"{m} {t} {json.dumps(b)[:30] if b else ''}".strip() for m, t, b in CROSS_SPACE_ROUTES])
def test_another_spaces_ids_are_404(space_a: dict[str, Any], space_b: Any, method: str, template: str,
                                    body: Any) -> None:
    # When B's admin token names one of A's objects
    path = _fill(template, space_a["ids"])
    response = space_b.open(path, method=method, json=_fill(body, space_a["ids"]))
    # Then it is a 404, as for an id that does not exist
    assert response.status_code == 404, (path, response.get_json())
    assert response.get_json()["code"] == 4040 and response.get_json()["msg"]


def test_another_spaces_requests_change_nothing(space_a: dict[str, Any], space_b: Any) -> None:
    # Given B tried every id route on A's objects
    for method, template, body in CROSS_SPACE_ROUTES:
        space_b.open(_fill(template, space_a["ids"]), method=method, json=_fill(body, space_a["ids"]))
    # Then A's workflow, run and token are as they were
    a, ids = space_a["client"], space_a["ids"]
    workflow = a.get(f"/v1/workflows/{ids['workflow_id']}").get_json()
    assert workflow["latest_version"] == 1 and workflow["published_version"] is None
    assert a.get(f"/v1/runs/{ids['run_id']}").get_json()["status"] == "queued"
    assert len(a.get("/v1/runs").get_json()["runs"]) == 1
    token = next(t for t in a.get("/v1/tokens").get_json()["tokens"] if str(t["token_id"]) == ids["token_id"])
    assert token["revoked_at"] is None


def test_list_routes_never_show_another_spaces_objects(space_a: dict[str, Any], space_b: Any) -> None:
    ids = space_a["ids"]
    # Given B has a workflow and a run of its own, with the same idempotency key as A's run
    own = space_b.post("/v1/workflows", json={"name": "b-wf", "definition": DEFINITION}).get_json()["workflow_id"]
    run = space_b.post(f"/v1/workflows/{own}/runs", json={"inputs": {}, "idempotency_key": "k1"}).get_json()
    # Then B's lists hold only B's objects, and the key gave B a run of its own
    assert run["run_id"] != ids["run_id"]
    assert [w["workflow_id"] for w in space_b.get("/v1/workflows").get_json()["workflows"]] == [own]
    assert [r["run_id"] for r in space_b.get("/v1/runs").get_json()["runs"]] == [run["run_id"]]
    assert space_b.get(f"/v1/runs?workflow_id={ids['workflow_id']}").get_json()["runs"] == []
    assert {t["space_id"] for t in space_b.get("/v1/tokens").get_json()["tokens"]} == {"space-b"}


# -- the token lifecycle over the API -------------------------------------------------------

def test_token_lifecycle_create_list_revoke(app: Any, store: Store) -> None:
    admin = _client(app, _token(store, "acme", "admin"))
    # When an admin creates a token
    response = admin.post("/v1/tokens", json={"name": "ci", "scopes": ["run", "manage", "run"], "expires_in_s": 3600})
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert created["token"].startswith("rf_") and created["scopes"] == ["run", "manage"]
    assert created["space_id"] == "acme" and created["name"] == "ci"
    expires_at = datetime.fromisoformat(created["expires_at"])
    assert timedelta(minutes=59) < expires_at - datetime.now(UTC) <= timedelta(hours=1)
    # Then its plaintext works at once, in the admin's space
    ci = _client(app, created["token"])
    assert ci.post("/v1/workflows", json={"name": "wf", "definition": DEFINITION}).status_code == 201
    assert len(admin.get("/v1/workflows").get_json()["workflows"]) == 1
    # And the list shows it without any secret
    listing = admin.get("/v1/tokens")
    assert listing.status_code == 200
    text = listing.get_data(as_text=True)
    assert created["token"] not in text and hash_token(created["token"]) not in text
    shown = {t["token_id"]: t for t in listing.get_json()["tokens"]}[created["token_id"]]
    assert set(shown) == {"token_id", "name", "owner", "space_id", "scopes", "created_at", "expires_at",
                          "last_used_at", "revoked_at"}
    assert shown["revoked_at"] is None and shown["expires_at"] == created["expires_at"]
    # When it is revoked, it is refused; a second revoke is a 409
    revoked = admin.post(f"/v1/tokens/{created['token_id']}/revoke")
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"]
    refused = ci.get("/v1/workflows")
    assert refused.status_code == 401 and "revoked" in refused.get_json()["msg"]
    again = admin.post(f"/v1/tokens/{created['token_id']}/revoke")
    assert again.status_code == 409 and "already revoked" in again.get_json()["msg"]
    # and ids that are not the space's tokens are 404 (or 422 when not an id at all)
    assert admin.post("/v1/tokens/999999/revoke").status_code == 404
    assert admin.post("/v1/tokens/abc/revoke").status_code == 422


def test_tokens_without_expiry_and_bad_expiries(app: Any, store: Store) -> None:
    admin = _client(app, _token(store, "acme", "admin"))
    forever = admin.post("/v1/tokens", json={"name": "forever", "scopes": ["run"], "expires_in_s": None})
    assert forever.status_code == 201 and forever.get_json()["expires_at"] is None
    default = admin.post("/v1/tokens", json={"name": "default", "scopes": ["run"]}).get_json()
    assert datetime.fromisoformat(default["expires_at"]) > datetime.now(UTC) + timedelta(days=89)
    for bad in (0, -5, 10**12):
        response = admin.post("/v1/tokens", json={"name": "bad", "scopes": ["run"], "expires_in_s": bad})
        assert response.status_code == 422 and "expires_in_s" in response.get_json()["msg"], bad


def test_last_used_at_is_recorded_at_most_once_a_minute(app: Any, store: Store) -> None:
    admin = _client(app, _token(store, "acme", "admin"))
    created = admin.post("/v1/tokens", json={"name": "ci", "scopes": ["run"]}).get_json()

    def last_used() -> str | None:
        tokens = admin.get("/v1/tokens").get_json()["tokens"]
        return next(t for t in tokens if t["token_id"] == created["token_id"])["last_used_at"]

    assert last_used() is None
    # When the token makes a request, its use is recorded
    ci = _client(app, created["token"])
    assert ci.get("/v1/runs").status_code == 200
    first = last_used()
    assert first is not None
    assert datetime.now(UTC) - datetime.fromisoformat(first) < timedelta(seconds=30)
    # and a request within the minute does not write it again
    assert ci.get("/v1/runs").status_code == 200
    assert last_used() == first


def test_openapi_documents_the_token_routes_and_their_errors(app: Any) -> None:
    doc = app.test_client().get("/openapi.json").get_json()
    create = doc["paths"]["/v1/tokens"]["post"]["responses"]
    revoke = doc["paths"]["/v1/tokens/{token_id}/revoke"]["post"]["responses"]
    assert {"201", "401", "403", "422"} <= set(create)
    assert {"200", "401", "403", "404", "409", "422"} <= set(revoke)
    assert "ErrorBody" in json.dumps(revoke["409"])


def test_authentication_comes_before_any_input_check(app: Any) -> None:
    plain = app.test_client()
    for method, path, body in (("POST", "/v1/workflows", {"bogus": 1}), ("POST", "/v1/tokens", {}),
                               ("GET", "/v1/runs?limit=0", None), ("POST", "/v1/tokens/abc/revoke", None)):
        response = plain.open(path, method=method, json=body)
        assert response.status_code == 401, (path, response.get_json())
    malformed = plain.post("/v1/workflows", data="{not json", content_type="application/json")
    assert malformed.status_code == 401
