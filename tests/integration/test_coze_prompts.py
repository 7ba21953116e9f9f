"""Coze Studio's prompt routes driven with its field names; answers compared with the shapes of
shared/reference/coze-studio.md §6 (ids as JSON strings, {code, msg, data}, codes 1100000xx)."""
from __future__ import annotations

from typing import Any

import pytest

from engine.settings import Settings
from tests.integration.prompt_fixtures import make_client

pytestmark = pytest.mark.integration

PROMPT_RESOURCE = {"id", "space_id", "name", "description", "prompt_text"}
RESOURCE_INFO = {"res_id", "res_type", "res_sub_type", "name", "desc", "icon", "creator_id", "creator_name",
                 "publish_status", "biz_res_status", "edit_time", "space_id", "actions", "detail_disable", "del_flag"}


def test_upsert_get_list_and_delete_in_cozes_shapes(app: Any, settings: Settings) -> None:
    alice = make_client(app, settings, "acme", "alice")
    # create: no id
    created = alice.post("/api/playground_api/upsert_prompt_resource", json={"prompt": {
        "space_id": "acme", "name": "客服助手 🤖", "description": "support", "prompt_text": "你好 {{name}} 👋"}})
    assert created.status_code == 200, created.get_json()
    body = created.get_json()
    assert body["code"] == 0 and set(body) >= {"code", "msg", "data"}
    prompt_id = body["data"]["id"]
    assert isinstance(prompt_id, str) and prompt_id.isdigit()
    # get
    info = alice.get(f"/api/playground_api/get_prompt_resource_info?prompt_resource_id={prompt_id}").get_json()
    assert info["code"] == 0 and set(info["data"]) == PROMPT_RESOURCE
    assert info["data"] == {"id": prompt_id, "space_id": "acme", "name": "客服助手 🤖", "description": "support",
                            "prompt_text": "你好 {{name}} 👋"}
    # update: a new version of the same library prompt
    updated = alice.post("/api/playground_api/upsert_prompt_resource", json={"prompt": {
        "id": prompt_id, "space_id": "acme", "name": "客服助手 v2", "description": "support", "prompt_text": "v2"}})
    assert updated.get_json() == {"code": 0, "msg": "", "data": {"id": prompt_id}}
    info = alice.get(f"/api/playground_api/get_prompt_resource_info?prompt_resource_id={prompt_id}").get_json()
    assert (info["data"]["name"], info["data"]["prompt_text"]) == ("客服助手 v2", "v2")
    # the native routes see it: version 2, same creator
    listed = alice.get("/v1/prompts?q=客服").get_json()["prompts"]
    assert [(p["id"], p["latest_version"], p["creator"]) for p in listed] == [(prompt_id, 2, "alice")]
    # the library listing (res_type 6)
    library = alice.post("/api/plugin_api/library_resource_list",
                         json={"space_id": "acme", "res_type_filter": [6], "size": 10}).get_json()
    assert library["code"] == 0 and set(library) >= {"resource_list", "cursor", "has_more"}
    [item] = library["resource_list"]
    assert set(item) == RESOURCE_INFO
    assert (item["res_id"], item["res_type"], item["name"], item["creator_name"]) == (prompt_id, 6, "客服助手 v2", "alice")
    assert item["edit_time"].isdigit() and library["has_more"] is False
    assert alice.post("/api/plugin_api/library_resource_list",
                      json={"res_type_filter": [2]}).get_json()["resource_list"] == []
    # delete
    deleted = alice.post("/api/playground_api/delete_prompt_resource", json={"prompt_resource_id": prompt_id})
    assert deleted.get_json() == {"code": 0, "msg": ""}
    gone = alice.get(f"/api/playground_api/get_prompt_resource_info?prompt_resource_id={prompt_id}")
    assert gone.status_code == 404 and gone.get_json()["code"] == 110000005


def test_only_the_creator_or_an_admin_edits_with_cozes_no_permission_code(app: Any, settings: Settings) -> None:
    alice = make_client(app, settings, "acme", "alice")
    bob = make_client(app, settings, "acme", "bob")
    admin = make_client(app, settings, "acme", "dana", scopes=("admin",))
    prompt_id = alice.post("/api/playground_api/upsert_prompt_resource", json={"prompt": {
        "name": "mine", "prompt_text": "text"}}).get_json()["data"]["id"]
    # bob reads (same space), but neither updates nor deletes: 110000001 no permission
    assert bob.get(f"/api/playground_api/get_prompt_resource_info?prompt_resource_id={prompt_id}").status_code == 200
    for url, body in (("/api/playground_api/upsert_prompt_resource",
                       {"prompt": {"id": prompt_id, "name": "bob's", "prompt_text": "x"}}),
                      ("/api/playground_api/delete_prompt_resource", {"prompt_resource_id": prompt_id})):
        refused = bob.post(url, json=body)
        assert refused.status_code == 403 and refused.get_json()["code"] == 110000001, refused.get_json()
        assert refused.get_json()["msg"].startswith("no permission")
    # an admin may
    assert admin.post("/api/playground_api/delete_prompt_resource",
                      json={"prompt_resource_id": prompt_id}).get_json()["code"] == 0


def test_official_prompts_filtered_by_keyword(app: Any, settings: Settings) -> None:
    alice = make_client(app, settings, "acme", "alice")
    everything = alice.post("/api/playground_api/get_official_prompt_list", json={}).get_json()
    assert everything["code"] == 0 and len(everything["data"]) == 6
    assert all(set(p) == PROMPT_RESOURCE and p["id"].isdigit() and int(p["id"]) > 10000 for p in everything["data"])
    found = alice.post("/api/playground_api/get_official_prompt_list", json={"keyword": "TRANSLATE"}).get_json()
    assert [p["name"] for p in found["data"]] == ["Translator"]


def test_an_invalid_body_answers_cozes_invalid_param_code(app: Any, settings: Settings) -> None:
    alice = make_client(app, settings, "acme", "alice")
    refused = alice.post("/api/playground_api/upsert_prompt_resource", json={"prompt": {"name": ""}})
    assert refused.status_code == 422 and refused.get_json()["code"] == 110000000
    bad_id = alice.post("/api/playground_api/delete_prompt_resource", json={"prompt_resource_id": "x1"})
    assert bad_id.status_code == 422 and bad_id.get_json()["code"] == 110000000


def test_coze_routes_need_a_token(app: Any) -> None:
    anonymous = app.test_client()
    assert anonymous.post("/api/playground_api/get_official_prompt_list", json={}).status_code == 401
    assert anonymous.get("/api/playground_api/get_prompt_resource_info?prompt_resource_id=1").status_code == 401
