"""Rerun from a node: the nodes before it are not executed again (their side effects counted by a real
loopback server), the nodes after it are; overrides of the model and the prompt version take effect;
lineage; bulk reruns with a dry run first; refusals."""
from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from api.localstack.fake_llm import FakeLLM
from tests.integration.prompt_fixtures import make_client
from tests.integration.test_llm_node import refresh
from tests.integration.test_prompt_nodes import prompt_workflow, versions

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),  # as test_llm_node.py
]


class _Counting(BaseHTTPRequestHandler):
    """Counts requests per path; `/b` fails (HTTP 500) while the server's `b_fails` is above 0."""

    server: Any

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self.server.lock:
            self.server.hits[parts.path] += 1
            self.server.queries.setdefault(parts.path, []).append(query)
            count = self.server.hits[parts.path]
            failing = parts.path == "/b" and self.server.b_fails > 0
            if failing:
                self.server.b_fails -= 1
        if failing:
            self._reply(500, {"error": "not today"})
        elif parts.path == "/a":
            self._reply(200, {"value": f"alpha-{count}"})
        else:
            self._reply(200, {"got": query.get("x"), "echo": query.get("y")})

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def counter() -> Iterator[Any]:
    """A loopback server counting requests per path (`hits`), keeping their queries (`queries`)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    server.daemon_threads = True
    server.lock, server.hits, server.queries, server.b_fails = threading.Lock(), Counter(), {}, 1  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def chain(url: str) -> dict[str, Any]:
    """A(http) -> B(http, its query from A's answer) -> C(http, its query from B's answer)."""
    return {"inputs": {"tag": {"type": "string", "default": "t0"}},
            "nodes": [{"id": "A", "type": "http", "config": {"url": f"{url}/a"}},
                      {"id": "B", "type": "http", "config": {"url": f"{url}/b", "query": {"x": "{{ x }}"}},
                       "inputs": {"x": "{{ A.json.value }}"}},
                      {"id": "C", "type": "http", "config": {"url": f"{url}/c", "query": {"y": "{{ B.json.got }}"}}}],
            "outputs": {"c": "{{ C.json.echo }}", "tag": "{{ inputs.tag }}"}}


def rerun(client: Any, run_id: str, **body: Any) -> Any:
    return client.post(f"/v1/runs/{run_id}/rerun", json=body)


def failed_at_b(api: Any, counter: Any) -> tuple[str, str]:
    """A workflow of the chain and a run of it that failed at B (A's endpoint hit once)."""
    workflow_id = api.create_workflow(chain(counter.url))
    source = api.wait(api.submit(workflow_id))
    assert source["status"] == "failed" and source["error"]["node_id"] == "B", source
    assert counter.hits == Counter({"/a": 1, "/b": 1})
    return workflow_id, source["run_id"]


def test_a_rerun_from_the_failed_node_reuses_what_came_before_and_runs_the_rest(
        api: Any, client: Any, inline_worker: Any, counter: Any) -> None:
    # Given a run that failed at B (its first call answers 500), after A succeeded
    _workflow_id, source_id = failed_at_b(api, counter)
    # When it is rerun from B
    response = rerun(client, source_id, from_node="B")
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["source_run_id"] == source_id and body["status"] == "queued"
    run = api.wait(body["run_id"])
    # Then A's endpoint was not called again, B and C were, and the run succeeded
    assert run["status"] == "succeeded", run
    assert counter.hits == Counter({"/a": 1, "/b": 2, "/c": 1})
    # And B rendered its input from A's reused output (the source's answer, alpha-1)
    assert counter.queries["/b"][-1] == {"x": "alpha-1"}
    assert run["outputs"] == {"c": "alpha-1", "tag": "t0"}
    a, b = api.node(run, "A"), api.node(run, "B")
    assert a["reused"] is True and a["attempts"] == 0 and a["output"]["json"] == {"value": "alpha-1"}
    assert b["reused"] is False and b["attempts"] == 1
    # And the lineage links both ways
    assert run["source_run_id"] == source_id and run["rerun_from"] == "B" and run["reruns"] == []
    assert api.run(source_id)["reruns"] == [run["run_id"]]


def test_new_inputs_reach_the_rerun_nodes_and_reused_outputs_stay(
        api: Any, client: Any, inline_worker: Any, counter: Any) -> None:
    _workflow_id, source_id = failed_at_b(api, counter)
    # When rerun from B with new run inputs
    response = rerun(client, source_id, from_node="B", inputs={"tag": "t1"})
    assert response.status_code == 202, response.get_json()
    run = api.wait(response.get_json()["run_id"])
    # Then the run sees them, and A's output is the source's (not recomputed)
    assert run["status"] == "succeeded", run
    assert run["inputs"] == {"tag": "t1"} and run["outputs"] == {"c": "alpha-1", "tag": "t1"}
    assert counter.hits["/a"] == 1


def test_an_input_override_replaces_the_from_nodes_rendered_input(
        api: Any, client: Any, inline_worker: Any, counter: Any) -> None:
    _workflow_id, source_id = failed_at_b(api, counter)
    response = rerun(client, source_id, from_node="B", overrides={"inputs": {"x": "by-hand"}})
    assert response.status_code == 202, response.get_json()
    run = api.wait(response.get_json()["run_id"])
    assert run["status"] == "succeeded", run
    assert counter.queries["/b"][-1] == {"x": "by-hand"} and run["outputs"]["c"] == "by-hand"


def test_rerunning_a_succeeded_run_from_the_last_node_runs_only_that_node(
        api: Any, client: Any, inline_worker: Any, counter: Any) -> None:
    counter.b_fails = 0
    source = api.wait(api.submit(api.create_workflow(chain(counter.url))))
    assert source["status"] == "succeeded"
    run = api.wait(rerun(client, source["run_id"], from_node="C").get_json()["run_id"])
    assert run["status"] == "succeeded" and run["outputs"]["c"] == "alpha-1"
    assert counter.hits == Counter({"/a": 1, "/b": 1, "/c": 2})


def test_an_llm_model_override_answers_with_the_override_model_and_reused_tokens_are_not_charged(
        api: Any, client: Any, inline_worker: Any, fake_llm: FakeLLM, write_model: Any) -> None:
    # Given two models served as different upstream names, and a run: first -> ask -> last (llm nodes)
    write_model("primary", "echo")
    write_model("other", "echo-other")
    refresh(client)

    def llm(node_id: str, prompt: str) -> dict[str, Any]:
        return {"id": node_id, "type": "llm", "config": {"model": "primary", "prompt": prompt, "stream": False}}

    definition = {"nodes": [llm("first", "one"), llm("ask", "two {{ first.text }}"), llm("last", "three {{ ask.text }}")],
                  "outputs": {"answer": "{{ last.text }}"}}
    source = api.wait(api.submit(api.create_workflow(definition)))
    assert source["status"] == "succeeded", source
    assert fake_llm.calls == {"echo": 3}
    # When `ask` is rerun with the model `other`
    response = rerun(client, source["run_id"], from_node="ask", overrides={"model": "other"})
    assert response.status_code == 202, response.get_json()
    run = api.wait(response.get_json()["run_id"])
    # Then `other`'s upstream answered `ask` only (`last`, downstream, kept its model), `first` was not asked
    assert run["status"] == "succeeded", run
    assert fake_llm.calls == {"echo": 4, "echo-other": 1}
    assert api.node(run, "ask")["model"] == "other" and api.node(run, "last")["model"] == "primary"
    assert api.node(run, "first")["reused"] is True
    # And only the rerun nodes' tokens are charged to the new run
    charged = sum(api.node(run, n)["usage"]["input_tokens"] for n in ("ask", "last"))
    assert run["usage"]["input_tokens"] == charged > 0
    assert api.node(run, "first")["usage"] is None
    # An unknown model, or a model for a node that calls none, is refused naming the field
    unknown = rerun(client, source["run_id"], from_node="ask", overrides={"model": "nope"})
    assert unknown.status_code == 422 and unknown.get_json()["errors"][0]["field"] == "overrides.model"


def test_a_prompt_version_override_renders_that_version(
        api: Any, client: Any, inline_worker: Any, fake_llm: FakeLLM, write_model: Any) -> None:
    write_model("steady", "echo")
    refresh(client)
    versions(client, "answer", "v1 about {{ topic }}", "v2 about {{ topic }}", production=2)
    source = api.wait(api.submit(api.create_workflow(prompt_workflow("steady", {"key": "answer", "label": "production"}))))
    assert source["status"] == "succeeded" and api.node(source, "ask")["prompt"]["version"] == 2
    # When rerun with prompt version 1
    response = rerun(client, source["run_id"], from_node="ask", overrides={"prompt_version": 1})
    assert response.status_code == 202, response.get_json()
    run = api.wait(response.get_json()["run_id"])
    # Then version 1's text was sent and pinned
    assert run["status"] == "succeeded", run
    assert api.node(run, "ask")["prompt"] == {"key": "answer", "version": 1}
    assert "v1 about otters" in json.dumps(fake_llm.requests[-1])
    # A version the prompt does not have is refused
    missing = rerun(client, source["run_id"], from_node="ask", overrides={"prompt_version": 9})
    assert missing.status_code == 422 and missing.get_json()["errors"][0]["field"] == "overrides.prompt_version"


def test_refusals_name_the_field(api: Any, client: Any, app: Any, settings: Any, inline_worker: Any,
                                 counter: Any) -> None:
    counter.b_fails = 5
    workflow_id, source_id = failed_at_b(api, counter)
    # An unknown node, a node past the failure (B never succeeded), an input override it lacks
    for body, field in [({"from_node": "Z"}, "from_node"), ({"from_node": "C"}, "from_node"),
                        ({"from_node": "B", "overrides": {"inputs": {"nope": 1}}}, "overrides.inputs.nope"),
                        ({"from_node": "A", "overrides": {"model": "m"}}, "overrides.model")]:
        response = rerun(client, source_id, **body)
        assert response.status_code == 422, (body, response.get_json())
        assert response.get_json()["errors"][0]["field"] == field, response.get_json()
    # A run that has not ended: 409
    live = api.submit(workflow_id)
    assert rerun(client, live, from_node="A").status_code == 409
    api.wait(live)
    # Another space's run: 404
    other = make_client(app, settings, "space-b", "bob")
    assert rerun(other, source_id, from_node="A").status_code == 404
    window = {"since": "2020-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z", "dry_run": True}
    assert other.post(f"/v1/workflows/{workflow_id}/reruns", json=window).status_code == 404
    assert other.get(f"/v1/runs?source={source_id}").get_json()["runs"] == []
    # Nothing was started by the refusals
    assert api.run(source_id)["reruns"] == []


def test_a_child_run_as_source_is_refused_and_composite_nodes_rerun_or_are_reused_whole(
        api: Any, client: Any, inline_worker: Any) -> None:
    child_wf = api.create_workflow({"nodes": [{"id": "t", "type": "template", "config": {"template": "hi"}}],
                                    "outputs": {"text": "{{ t.text }}"}}, name="child")
    parent = api.wait(api.submit(api.create_workflow(
        {"nodes": [{"id": "sub", "type": "workflow", "config": {"workflow": child_wf}},
                   {"id": "tail", "type": "template", "config": {"template": "{{ sub.text }}!"}}],
         "outputs": {"text": "{{ tail.text }}"}}, name="parent")))
    assert parent["status"] == "succeeded", parent
    child_id = client.get(f"/v1/runs?parent={parent['run_id']}").get_json()["runs"][0]["run_id"]
    response = rerun(client, child_id, from_node="t")
    assert response.status_code == 422 and response.get_json()["errors"][0]["field"] == "run_id"
    # The composite node as from_node runs again with a new child run
    again = api.wait(rerun(client, parent["run_id"], from_node="sub").get_json()["run_id"])
    assert again["status"] == "succeeded" and again["outputs"] == parent["outputs"]
    children = client.get(f"/v1/runs?parent={again['run_id']}").get_json()["runs"]
    assert len(children) == 1 and children[0]["run_id"] != child_id
    # A composite upstream of from_node is reused as a whole: its outputs, no child runs copied
    tail = api.wait(rerun(client, parent["run_id"], from_node="tail").get_json()["run_id"])
    assert tail["status"] == "succeeded" and tail["outputs"] == {"text": "hi!"}
    assert api.node(tail, "sub")["reused"] is True and api.node(tail, "sub")["progress"]["done"] == 1
    assert client.get(f"/v1/runs?parent={tail['run_id']}").get_json()["runs"] == []


def test_bulk_rerun_counts_first_then_reruns_each_failed_run_once(
        api: Any, client: Any, inline_worker: Any, counter: Any) -> None:
    # Given three runs that failed at B
    counter.b_fails = 3
    workflow_id = api.create_workflow(chain(counter.url))
    sources = [api.wait(api.submit(workflow_id))["run_id"] for _ in range(3)]
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    until = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    window = {"since": since, "until": until}
    # When a dry run counts them
    dry = client.post(f"/v1/workflows/{workflow_id}/reruns", json={**window, "dry_run": True})
    assert dry.status_code == 200, dry.get_json()
    assert dry.get_json()["count"] == 3 and set(dry.get_json()["runs"]) == set(sources)
    assert counter.hits["/a"] == 3 and all(api.run(s)["reruns"] == [] for s in sources)
    # And the real call reruns each from the node that failed it
    real = client.post(f"/v1/workflows/{workflow_id}/reruns", json=window)
    assert real.status_code == 202, real.get_json()
    started = real.get_json()["runs"]
    assert real.get_json()["count"] == 3 and {r["source_run_id"] for r in started} == set(sources)
    assert {r["from_node"] for r in started} == {"B"}
    for item in started:
        assert api.wait(item["run_id"])["status"] == "succeeded"
    assert counter.hits == Counter({"/a": 3, "/b": 6, "/c": 3})
    # Then a second call over the same range finds nothing new, unless `again`
    assert client.post(f"/v1/workflows/{workflow_id}/reruns", json=window).get_json()["count"] == 0
    assert client.post(f"/v1/workflows/{workflow_id}/reruns",
                       json={**window, "dry_run": True, "again": True}).get_json()["count"] == 3
    # And the reruns are listed by their source
    listed = client.get(f"/v1/runs?source={sources[0]}").get_json()["runs"]
    assert [r["run_id"] for r in listed] == [r["run_id"] for r in started if r["source_run_id"] == sources[0]]
    assert listed[0]["source_run_id"] == sources[0] and listed[0]["rerun_from"] == "B"
    # A range ending before it starts is refused naming `until`
    bad = client.post(f"/v1/workflows/{workflow_id}/reruns", json={"since": until, "until": since})
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["field"] == "until"


def test_the_command_line_reruns_one_run_and_counts_a_bulk_dry_run(
        settings: Any, web_server: str, token: str, api: Any, start_worker: Any, counter: Any) -> None:
    # Given real web and worker processes, and a run that failed at B
    from tests.integration.test_cli_client import _cli, _env, _out

    env = _env(settings, web_server, token)
    start_worker()
    workflow_id, source_id = failed_at_b(api, counter)
    # When `relayflow rerun --workflow --dry-run` counts, then `relayflow rerun RUN --from B --watch` reruns
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    until = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    dry = _cli(env, "rerun", "--workflow", workflow_id, "--since", since, "--until", until, "--dry-run", "--json")
    assert dry.returncode == 0, _out(dry)
    assert json.loads(dry.stdout)["count"] == 1
    watched = _cli(env, "rerun", source_id, "--from", "B", "--watch")
    # Then it exits 0 with the rerun succeeded, A's endpoint untouched
    assert watched.returncode == 0, _out(watched)
    assert "reused: A" in watched.stdout and "succeeded" in watched.stdout
    assert counter.hits == Counter({"/a": 1, "/b": 2, "/c": 1})
    # And an unknown node is refused naming it, exit 1
    refused = _cli(env, "rerun", source_id, "--from", "Z")
    assert refused.returncode == 1 and "from_node" in _out(refused)
