"""The prompt library's native routes on real Postgres: versions, labels, diff, history, search,
permissions (creator, admin, run-only, other spaces) and optimistic locking under real threads."""
from __future__ import annotations

import threading
from typing import Any

import pytest

from engine.settings import Settings
from tests.integration.prompt_fixtures import make_client, new_prompt, save

pytestmark = pytest.mark.integration

TRICKY = "Bonjour 👋🏽 {{ name }} — 你好，世界 — שלום עולם — مرحبا\r\n\ttabs\u200d and e\u0301\n"


def test_a_prompt_round_trips_byte_exact(app: Any, settings: Settings) -> None:
    # Given a prompt whose text mixes emoji, CJK, RTL scripts, CRLF and combining characters
    alice = make_client(app, settings, "acme", "alice")
    new_prompt(alice, "greet", TRICKY, name="问候 👋", description="RTL: שלום", tags=["客服", "🔥"])
    # When it is read back, Then every character is as sent
    got = alice.get("/v1/prompts/greet").get_json()
    assert got["version"]["text"] == TRICKY
    assert (got["name"], got["description"], got["tags"]) == ("问候 👋", "RTL: שלום", ["客服", "🔥"])
    assert got["creator"] == "alice" and got["labels"] == {"latest": 1}


def test_versions_labels_diff_and_history(app: Any, settings: Settings) -> None:
    alice = make_client(app, settings, "acme", "alice")
    new_prompt(alice, "faq", "line one\nline two\n", labels=["production"])
    assert save(alice, "faq", 1, "line one\nline 2\n").status_code == 201
    # latest moves by itself; production stays until moved
    assert alice.get("/v1/prompts/faq").get_json()["version"]["number"] == 1
    assert alice.get("/v1/prompts/faq?label=latest").get_json()["version"]["number"] == 2
    moved = alice.put("/v1/prompts/faq/labels/production", json={"version": 2}).get_json()
    assert (moved["version"], moved["previous_version"]) == (2, 1)
    assert alice.get("/v1/prompts/faq").get_json()["version"]["text"] == "line one\nline 2\n"
    # a rollback is a label move
    alice.put("/v1/prompts/faq/labels/production", json={"version": 1})
    assert alice.get("/v1/prompts/faq?label=production").get_json()["version"]["number"] == 1
    assert alice.get("/v1/prompts/faq?version=2").get_json()["version"]["number"] == 2
    assert alice.put("/v1/prompts/faq/labels/latest", json={"version": 1}).status_code == 422
    assert alice.get("/v1/prompts/faq?version=9").status_code == 404
    diff = alice.get("/v1/prompts/faq/diff?from=1&to=2").get_json()["diff"]
    assert "--- faq@v1" in diff and "-line two" in diff and "+line 2" in diff
    events = alice.get("/v1/prompts/faq/history").get_json()["events"]
    assert [(e["action"], e["version"]) for e in events] == [
        ("create", 1), ("label", 1), ("version", 2), ("label", 2), ("label", 1)]
    assert {e["actor"] for e in events} == {"alice"}
    assert events[3]["detail"] == {"label": "production", "from": 1, "to": 2}


def test_creator_edits_others_read_and_an_admin_overrides(app: Any, settings: Settings) -> None:
    alice = make_client(app, settings, "acme", "alice")
    bob = make_client(app, settings, "acme", "bob")
    runner = make_client(app, settings, "acme", "carol", scopes=("run",))
    admin = make_client(app, settings, "acme", "dana", scopes=("admin",))
    new_prompt(alice, "p1")
    # every token of the space reads
    for reader in (bob, runner, admin):
        assert reader.get("/v1/prompts/p1").status_code == 200
    # only the creator (or an admin) writes
    assert save(bob, "p1", 1, "bob's").status_code == 403
    assert bob.put("/v1/prompts/p1/labels/production", json={"version": 1}).status_code == 403
    assert bob.delete("/v1/prompts/p1").status_code == 403
    # a run-only token writes nothing, not even its own prompts
    assert runner.post("/v1/prompts", json={"key": "r", "version": {"text": "x"}}).status_code == 403
    assert save(runner, "p1", 1, "x").status_code == 403
    # the admin overrides; the history names who did it
    assert save(admin, "p1", 1, "admin's").status_code == 201
    assert save(alice, "p1", 2, "alice again").status_code == 201
    assert admin.delete("/v1/prompts/p1").status_code == 200
    assert alice.get("/v1/prompts/p1").status_code == 404
    # restore is the admin's
    assert alice.post("/v1/prompts/p1/restore").status_code == 403
    assert admin.post("/v1/prompts/p1/restore").status_code == 200
    actors = [(e["action"], e["actor"]) for e in alice.get("/v1/prompts/p1/history").get_json()["events"]]
    assert actors == [("create", "alice"), ("version", "dana"), ("version", "alice"), ("delete", "dana"),
                      ("restore", "dana")]


def _routes(key: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [("GET", f"/v1/prompts/{key}", None), ("GET", f"/v1/prompts/{key}?version=1", None),
            ("GET", f"/v1/prompts/{key}?label=latest", None),
            ("POST", f"/v1/prompts/{key}/versions", {"base_version": 1, "text": "x"}),
            ("PUT", f"/v1/prompts/{key}/labels/production", {"version": 1}),
            ("GET", f"/v1/prompts/{key}/diff?from=1&to=1", None), ("GET", f"/v1/prompts/{key}/history", None),
            ("DELETE", f"/v1/prompts/{key}", None), ("POST", f"/v1/prompts/{key}/restore", None)]


def test_another_space_sees_nothing_on_any_route(app: Any, settings: Settings) -> None:
    # Given a prompt of space acme (also one deleted, for the restore route)
    alice = make_client(app, settings, "acme", "alice", scopes=("admin",))
    created = new_prompt(alice, "secret", "top secret 机密")
    new_prompt(alice, "gone")
    alice.delete("/v1/prompts/gone")
    # When an admin of another space tries every route, Then every answer is 404
    mallory = make_client(app, settings, "other", "mallory", scopes=("admin",))
    for method, url, body in _routes("secret") + [("POST", "/v1/prompts/gone/restore", None)]:
        response = mallory.open(url, method=method, json=body)
        assert response.status_code == 404, (method, url, response.get_json())
    coze = [("GET", f"/api/playground_api/get_prompt_resource_info?prompt_resource_id={created['id']}", None),
            ("POST", "/api/playground_api/upsert_prompt_resource",
             {"prompt": {"id": created["id"], "name": "x", "prompt_text": "y"}}),
            ("POST", "/api/playground_api/delete_prompt_resource", {"prompt_resource_id": created["id"]})]
    for method, url, body in coze:
        response = mallory.open(url, method=method, json=body)
        assert response.status_code == 404 and response.get_json()["code"] == 110000005, (url, response.get_json())
    # and listings and searches of the other space do not show it
    assert mallory.get("/v1/prompts?q=机密").get_json()["prompts"] == []
    listed = mallory.post("/api/plugin_api/library_resource_list", json={"res_type_filter": [6]}).get_json()
    assert listed["resource_list"] == []
    # while the prompt is untouched
    assert alice.get("/v1/prompts/secret").get_json()["latest_version"] == 1


def test_concurrent_saves_give_one_201_and_one_409(app: Any, settings: Settings) -> None:
    # Given two editors (the creator and an admin) who both start from version 1
    alice = make_client(app, settings, "acme", "alice")
    admin = make_client(app, settings, "acme", "dana", scopes=("admin",))
    new_prompt(alice, "race")
    barrier = threading.Barrier(2)
    answers: dict[str, Any] = {}

    def saver(name: str, client: Any) -> None:
        barrier.wait()
        response = save(client, "race", 1, f"{name}'s edit")
        answers[name] = (response.status_code, response.get_json())

    # When both save at once (real threads, real database)
    threads = [threading.Thread(target=saver, args=(n, c)) for n, c in (("alice", alice), ("dana", admin))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Then exactly one is saved; the other gets 409 naming the current version and its author
    statuses = sorted(status for status, _ in answers.values())
    assert statuses == [201, 409], answers
    winner = next(n for n, (status, _) in answers.items() if status == 201)
    conflict = next(body for status, body in answers.values() if status == 409)
    assert (conflict["current_version"], conflict["author"]) == (2, winner)
    got = alice.get("/v1/prompts/race?label=latest").get_json()
    assert got["latest_version"] == 2 and got["version"]["text"] == f"{winner}'s edit"
    assert [e["action"] for e in alice.get("/v1/prompts/race/history").get_json()["events"]] == ["create", "version"]


def test_search_finds_cjk_substrings_and_emoji(app: Any, settings: Settings) -> None:
    alice = make_client(app, settings, "acme", "alice")
    new_prompt(alice, "support", "你是一个专业的客服助手，请礼貌回答。", tags=["cs"])
    new_prompt(alice, "party", "Celebrate 🎉 with {{ name }}", name="Party")
    new_prompt(alice, "plain", "Nothing special 100%", description="ordinary")

    def keys(query: str) -> list[str]:
        response = alice.get("/v1/prompts", query_string={"q": query})
        assert response.status_code == 200
        return [p["key"] for p in response.get_json()["prompts"]]

    assert keys("客服") == ["support"]  # two characters inside a sentence with no spaces
    assert keys("专业的客服助") == ["support"]
    assert keys("🎉") == ["party"]
    assert keys("PARTY") == ["party"]
    assert keys("100%") == ["plain"] and keys("%") == ["plain"]
    assert keys("ordinary") == ["plain"]
    assert keys("nowhere") == []
    assert [p["key"] for p in alice.get("/v1/prompts?tag=cs").get_json()["prompts"]] == ["support"]


def test_the_list_is_cursor_paged_and_filtered(app: Any, settings: Settings) -> None:
    alice = make_client(app, settings, "acme", "alice")
    bob = make_client(app, settings, "acme", "bob")
    for i in range(5):
        new_prompt(alice if i % 2 == 0 else bob, f"k{i}", labels=["production"] if i == 3 else [])
    seen: list[str] = []
    cursor = None
    while True:
        page = alice.get("/v1/prompts", query_string={"limit": 2, **({"cursor": cursor} if cursor else {})}).get_json()
        seen += [p["key"] for p in page["prompts"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["k4", "k3", "k2", "k1", "k0"]
    assert [p["key"] for p in alice.get("/v1/prompts?creator=bob").get_json()["prompts"]] == ["k3", "k1"]
    assert [p["key"] for p in alice.get("/v1/prompts?label=production").get_json()["prompts"]] == ["k3"]
    assert alice.get("/v1/prompts?cursor=abc").status_code == 422


def test_a_taken_key_is_409_and_a_bad_body_422(app: Any, settings: Settings) -> None:
    alice = make_client(app, settings, "acme", "alice")
    new_prompt(alice, "dup")
    assert alice.post("/v1/prompts", json={"key": "dup", "version": {"text": "x"}}).status_code == 409
    both = {"key": "both", "version": {"text": "x", "messages": [{"role": "user", "text": "y"}]}}
    assert alice.post("/v1/prompts", json=both).status_code == 422
    chat = new_prompt(alice, "chat", text="", version={"messages": [{"role": "system", "text": "be nice"},
                                                                       {"role": "user", "text": "{{ q }}"}]})
    assert chat["version"]["messages"][1] == {"role": "user", "text": "{{ q }}"}


def test_a_token_has_an_owner_who_is_the_creator(app: Any, settings: Settings) -> None:
    # Given an admin who makes a token for alice, and one without a user (its name is its owner)
    admin = make_client(app, settings, "acme", "dana", scopes=("admin",))
    made = admin.post("/v1/tokens", json={"name": "alice-laptop", "user": "alice", "scopes": ["manage"]}).get_json()
    unnamed = admin.post("/v1/tokens", json={"name": "ci-bot", "scopes": ["manage"]}).get_json()
    assert (made["owner"], unnamed["owner"]) == ("alice", "ci-bot")
    listed = {t["name"]: t["owner"] for t in admin.get("/v1/tokens").get_json()["tokens"]}
    assert listed["alice-laptop"] == "alice" and listed["ci-bot"] == "ci-bot"
    # When alice's token creates a prompt, Then alice (not the token) is its creator: another of her tokens edits it
    laptop = app.test_client()
    laptop.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {made['token']}"
    assert new_prompt(laptop, "owned")["creator"] == "alice"
    phone = make_client(app, settings, "acme", "alice")
    assert save(phone, "owned", 1, "from the phone").status_code == 201
