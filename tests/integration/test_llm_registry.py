"""The model registry at runtime: refreshes reach every worker process; keys never leak."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.localstack.fake_llm import FakeLLM
from tests.integration.llm_fixtures import FAKE_KEY
from tests.integration.test_llm_node import llm_workflow, refresh

pytestmark = pytest.mark.integration


def fan_out(model: str, width: int) -> dict[str, Any]:
    """`width` parallel LLM nodes on one model."""
    nodes = [{"id": f"ask{i}", "type": "llm", "config": {"model": model, "prompt": f"part {i}", "stream": False}}
             for i in range(width)]
    return {"nodes": nodes, "outputs": {f"a{i}": f"{{{{ ask{i}.text }}}}" for i in range(width)}}


def test_a_refresh_is_honoured_by_the_next_node_in_every_worker_process(
        api: Any, client: Any, fake_llm: FakeLLM, write_model: Any, start_worker: Any) -> None:
    # Given two worker processes, one thread each, that have both used the registry
    write_model("main", "v1+delay=0.3")
    write_model("old", "echo")
    assert refresh(client)["new_models"] == ["main", "old"]
    start_worker(processes=1, threads=1)
    start_worker(processes=1, threads=1)
    wide, on_old = api.create_workflow(fan_out("main", 6)), api.create_workflow(llm_workflow("old"))
    assert client.post("/v1/workflows", json={"name": "wf", "definition": llm_workflow("new")}).status_code == 422
    assert api.wait(api.submit(wide), timeout_s=60)["status"] == "succeeded"
    assert api.wait(api.submit(on_old), timeout_s=60)["status"] == "succeeded"
    assert fake_llm.calls["v1+delay=0.3"] == 6
    # When a model file changes, one is added and one removed, and the registry is refreshed
    write_model("main", "v2+delay=0.3")
    write_model("new", "echo")
    (Path(write_model("old").parent) / "old.yaml").unlink()
    data = refresh(client)
    assert (data["new_models"], data["updated_models"], data["removed_models"]) == (["new"], ["main"], ["old"])
    # Then the next nodes, on both processes (6 slow nodes for 2 single-thread workers), use the new registry
    run = api.wait(api.submit(wide), timeout_s=60)
    assert run["status"] == "succeeded", run
    assert fake_llm.calls["v1+delay=0.3"] == 6 and fake_llm.calls["v2+delay=0.3"] == 6
    assert api.wait(api.submit(api.create_workflow(llm_workflow("new"))), timeout_s=60)["status"] == "succeeded"
    gone = api.wait(api.submit(on_old), timeout_s=60)
    assert gone["status"] == "failed" and "model old is not in the registry (removed?)" in gone["error"]["message"]


def test_no_api_key_appears_in_responses_logs_or_events(api: Any, client: Any, settings: Any, tmp_path: Path,
                                                        fake_llm: FakeLLM, write_model: Any,
                                                        start_worker: Any) -> None:
    # Given models whose key comes from the environment, one of which the provider refuses (quoting the key)
    write_model("locked", "status=401")
    write_model("flaky", "status=500")
    write_model("fine", "echo")
    bodies = [client.post("/v1/models/refresh").get_data(as_text=True)]
    start_worker()
    runs = [api.wait(api.submit(api.create_workflow(wf)), timeout_s=60) for wf in
            (llm_workflow("locked"), llm_workflow("flaky", ["fine"]), llm_workflow("locked", ["fine"]))]
    assert [r["status"] for r in runs] == ["failed", "succeeded", "succeeded"]
    listed = client.get("/v1/models")
    bodies += [listed.get_data(as_text=True)] + [client.get(f"/v1/runs/{r['run_id']}").get_data(as_text=True)
                                                 for r in runs]
    # Then the model list (to an operator) names the key's variable, never the key or a part of it ...
    conn = {m["id"]: m["conn_config"] for m in listed.get_json()["models"]}
    assert conn["fine"]["api_key_set"] is True and conn["fine"]["api_key_env"] == "FAKE_LLM_KEY"
    assert "api_key" not in conn["fine"] and FAKE_KEY[:4] + "***" not in listed.get_data(as_text=True)
    # ... and appears in no response, no worker log line, no stored event or node row
    logs = [p.read_text(errors="replace") for p in tmp_path.glob("worker*.log")]
    with psycopg.connect((settings.database_url or "").replace("postgresql+psycopg://", "postgresql://")) as db:
        stored = [str(row) for row in db.execute("SELECT type, data FROM run_events")]
        stored += [str(row) for row in db.execute("SELECT error, attempt_log, output FROM node_runs")]
        stored += [str(row) for row in db.execute("SELECT models, problems FROM model_generations")]
    assert "Incorrect API key provided" in runs[0]["error"]["message"]
    for text in bodies + logs + stored:
        assert FAKE_KEY not in text and FAKE_KEY[4:20] not in text
