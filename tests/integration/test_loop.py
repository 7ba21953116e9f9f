"""The `loop` node: one child run of its inline body per iteration, one at a time; loop variables
updated by `set_variable`; `break` and `continue`; the iteration cap; outputs gathered once in
iteration order; duplicates, retries, on_error and cancel.

On the in-process worker (`inline_worker`): the point is the graph and the statements.
"""
from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from tests.conftest import ApiHelper

pytestmark = pytest.mark.integration


def loop_workflow(config: dict[str, Any], inputs: dict[str, Any] | None = None,
                  node: dict[str, Any] | None = None) -> dict[str, Any]:
    """A workflow of one loop node `L`, whose outputs are the run's outputs."""
    loop = {"id": "L", "type": "loop", "config": config, **(node or {})}
    keys = [*config.get("outputs", {}), "variables", "iterations"]
    return {"inputs": inputs or {}, "nodes": [loop], "outputs": {k: f"{{{{ L.{k} }}}}" for k in keys}}


def even_selector(on: str) -> dict[str, Any]:
    """A body selector whose `even` port is taken when `on` (a template) is even."""
    return {"id": "sel", "type": "selector", "config": {"branches": [
        {"name": "even", "conditions": [{"left": f"{{{{ {on} % 2 }}}}", "op": "=", "right": 0}]}]}}


def connect(database_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def iterations_of(database_url: str, run_id: str) -> list[tuple[int, str, int]]:
    """(item_index, status, parent_epoch) of every child run of the run, in index then epoch order."""
    with connect(database_url) as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            "SELECT item_index, status, parent_epoch FROM runs WHERE parent_run_id = %s "
            "ORDER BY item_index, parent_epoch", (run_id,)).fetchall()]


def test_a_count_loop_runs_its_body_once_per_iteration_and_carries_its_variables(
        api: ApiHelper, inline_worker: Any, database_url: str) -> None:
    # Given a count loop that adds each index to a loop variable
    config = {"mode": "count", "count": "{{ inputs.n }}", "variables": {"total": "{{ inputs.start }}"},
              "nodes": [{"id": "step", "type": "template", "config": {"template": "{{ index }}/{{ vars.total }}"}},
                        {"id": "add", "type": "set_variable", "config": {"values": {"total": "{{ vars.total + index }}"}}}],
              "outputs": {"step": "{{ step.text }}", "before": "{{ vars.total }}"}}
    workflow = api.create_workflow(loop_workflow(config, {"n": {"type": "integer"}, "start": {"type": "integer"}}))
    # When it runs 5 iterations
    run = api.wait(api.submit(workflow, {"n": 5, "start": 100}))
    # Then each iteration saw the variables the previous one set, and the outputs are in order
    assert run["status"] == "succeeded", run
    assert run["outputs"]["before"] == [100, 100, 101, 103, 106]
    assert run["outputs"]["step"] == ["0/100", "1/100", "2/101", "3/103", "4/106"]
    assert run["outputs"]["variables"] == {"total": 110}
    assert run["outputs"]["iterations"] == 5
    # And each iteration is one child run of the loop node, started after the previous one ended
    kids = iterations_of(database_url, run["run_id"])
    assert [k[0] for k in kids] == [0, 1, 2, 3, 4] and {k[1] for k in kids} == {"succeeded"}
    assert [k[2] for k in kids] == sorted({k[2] for k in kids})  # a new claim (epoch) per iteration
    assert api.node(run, "L")["attempts"] == 1
    # And the node's progress counts iterations
    assert api.node(run, "L")["progress"] == {"done": 5, "total": 5, "started": 5}


def test_an_array_loop_gives_each_iteration_its_item_and_the_nodes_inputs(api: ApiHelper, inline_worker: Any) -> None:
    config = {"mode": "array", "items": "{{ inputs.words }}",
              "nodes": [{"id": "say", "type": "template", "config": {"template": "{{ inputs.prefix }}{{ item }}{{ index }}"}}],
              "outputs": {"said": "{{ say.text }}"}}
    config["nodes"].append({"id": "tag", "type": "template", "config": {"template": "{{ mark.text }}{{ item }}"}})
    config["outputs"]["tagged"] = "{{ tag.text }}"
    definition = loop_workflow(config, {"words": {"type": "array"}}, {"inputs": {"prefix": "> "}})
    # (the body also references `mark`, a node of the enclosing graph)
    definition["nodes"].insert(0, {"id": "mark", "type": "template", "config": {"template": "#"}})
    run = api.wait(api.submit(api.create_workflow(definition), {"words": ["a", "b", "c"]}))
    assert run["status"] == "succeeded", run
    assert run["outputs"]["said"] == ["> a0", "> b1", "> c2"]
    assert run["outputs"]["tagged"] == ["#a", "#b", "#c"]
    assert run["outputs"]["iterations"] == 3 and run["outputs"]["variables"] == {}


def test_an_empty_array_loop_succeeds_at_once_with_empty_arrays(api: ApiHelper, inline_worker: Any,
                                                                 database_url: str) -> None:
    config = {"mode": "array", "items": "{{ inputs.words }}", "variables": {"x": 1},
              "nodes": [{"id": "say", "type": "template", "config": {"template": "{{ item }}"}}],
              "outputs": {"said": "{{ say.text }}"}}
    run = api.wait(api.submit(api.create_workflow(loop_workflow(config, {"words": {"type": "array"}})), {"words": []}))
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"said": [], "variables": {"x": 1}, "iterations": 0}
    assert iterations_of(database_url, run["run_id"]) == []


def test_a_while_loop_runs_as_long_as_its_condition_holds(api: ApiHelper, inline_worker: Any) -> None:
    # Given a while loop doubling n until it reaches the limit given to the node as an input
    config = {"mode": "while", "condition": "vars.n < inputs.limit", "variables": {"n": 1},
              "nodes": [{"id": "double", "type": "set_variable", "config": {"values": {"n": "{{ vars.n * 2 }}"}}}],
              "outputs": {"n": "{{ vars.n }}"}}
    definition = loop_workflow(config, node={"inputs": {"limit": 100}})
    run = api.wait(api.submit(api.create_workflow(definition)))
    assert run["status"] == "succeeded", run
    assert run["outputs"]["n"] == [1, 2, 4, 8, 16, 32, 64]
    assert run["outputs"]["variables"] == {"n": 128}
    assert run["outputs"]["iterations"] == 7


def test_break_ends_the_loop_after_its_iteration(api: ApiHelper, inline_worker: Any, database_url: str) -> None:
    # Given a count loop of 10 whose body breaks at index 3 (a selector's branch)
    stop = {"id": "sel", "type": "selector",
            "config": {"branches": [{"name": "stop", "conditions": [{"left": "{{ index }}", "op": "=", "right": 3}]}]}}
    config = {"mode": "count", "count": 10, "variables": {"last": None},
              "nodes": [stop, {"id": "out", "type": "break", "after": ["sel.stop"]},
                        {"id": "keep", "type": "set_variable", "config": {"values": {"last": "{{ index }}"}}}],
              "outputs": {"i": "{{ index }}"}}
    run = api.wait(api.submit(api.create_workflow(loop_workflow(config))))
    # Then the breaking iteration completed (its outputs and variables kept) and no other started
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"i": [0, 1, 2, 3], "variables": {"last": 3}, "iterations": 4}
    assert [k[0] for k in iterations_of(database_url, run["run_id"])] == [0, 1, 2, 3]


def test_continue_leaves_its_iteration_out_of_the_outputs_and_keeps_its_variables(
        api: ApiHelper, inline_worker: Any) -> None:
    # Given an array loop whose body continues on even items (counting them) and works on odd ones
    config = {"mode": "array", "items": [1, 2, 3, 4, 5, 6], "variables": {"skipped": 0},
              "nodes": [even_selector("item"),
                        {"id": "next", "type": "continue", "after": ["sel.even"]},
                        {"id": "count", "type": "set_variable", "after": ["sel.even"],
                         "config": {"values": {"skipped": "{{ vars.skipped + 1 }}"}}},
                        {"id": "work", "type": "template", "after": ["sel.else"],
                         "config": {"template": "{{ item * 10 }}"}}],
              "outputs": {"work": "{{ work.text }}", "index": "{{ index }}"}}
    run = api.wait(api.submit(api.create_workflow(loop_workflow(config))))
    # Then the continued iterations produce no element, and their set_variable still applied
    assert run["status"] == "succeeded", run
    assert run["outputs"]["work"] == ["10", "30", "50"]
    assert run["outputs"]["index"] == [0, 2, 4]
    assert run["outputs"]["variables"] == {"skipped": 3}
    assert run["outputs"]["iterations"] == 6


def test_a_while_loop_that_never_ends_fails_at_its_cap_naming_node_cap_and_setting(
        api: ApiHelper, inline_worker: Any, database_url: str) -> None:
    # Given a while loop whose condition is always true, under a cap of 6 from the setting
    inline_worker.executor.settings = inline_worker.executor.settings.model_copy(update={"loop_max_iterations": 6})
    config = {"mode": "while", "condition": "true", "variables": {"n": 0},
              "nodes": [{"id": "inc", "type": "set_variable", "config": {"values": {"n": "{{ vars.n + 1 }}"}}}]}
    run = api.wait(api.submit(api.create_workflow(loop_workflow(config))))
    # Then it ran 6 iterations and failed, naming the node, the cap and the setting
    assert run["status"] == "failed", run
    message = run["error"]["message"]
    assert "Node L" in message and "cap of 6 iterations" in message, message
    assert "RELAYFLOW_LOOP_MAX_ITERATIONS" in message
    assert len(iterations_of(database_url, run["run_id"])) == 6
    # And its own max_iterations (lower) is named when it is the one that applies
    config["max_iterations"] = 2
    run = api.wait(api.submit(api.create_workflow(loop_workflow(config), name="capped")))
    assert "cap of 2 iterations (config.max_iterations)" in run["error"]["message"]


def test_a_count_over_the_cap_is_refused_before_any_iteration(api: ApiHelper, inline_worker: Any,
                                                               database_url: str) -> None:
    config = {"mode": "count", "count": 5, "max_iterations": 3,
              "nodes": [{"id": "t", "type": "template", "config": {"template": "x"}}]}
    run = api.wait(api.submit(api.create_workflow(loop_workflow(config))))
    assert run["status"] == "failed"
    assert "5 iterations, over the limit of 3 (config.max_iterations)" in run["error"]["message"]
    assert iterations_of(database_url, run["run_id"]) == []


def failing_at(index: int, **node: Any) -> dict[str, Any]:
    """A count loop of 5 whose iteration `index` fails (a code error)."""
    body = [{"id": "check", "type": "code", "inputs": {"i": "{{ index }}"}, "outputs": {"i": "integer"},
             "config": {"code": f"def main(args):\n    if args['i'] == {index}:\n"
                                "        raise ValueError('bad ' + str(args['i']))\n    return {'i': args['i']}\n"}}]
    return loop_workflow({"mode": "count", "count": 5, "nodes": body, "outputs": {"i": "{{ check.i }}"}}, node=node)


def test_a_failed_iteration_fails_the_loop_and_a_retry_starts_over(api: ApiHelper, inline_worker: Any,
                                                                   database_url: str) -> None:
    run = api.wait(api.submit(api.create_workflow(
        failing_at(2, retry={"max_attempts": 2, "backoff_s": 0.01, "jitter": False}))))
    assert run["status"] == "failed", run
    assert "Node L: iteration 2" in run["error"]["message"] and "bad 2" in run["error"]["message"]
    assert api.node(run, "L")["attempts"] == 2
    # each attempt started over from iteration 0 with children of its own (epochs apart)
    kids = iterations_of(database_url, run["run_id"])
    assert [k[0] for k in kids] == [0, 0, 1, 1, 2, 2]
    first, second = sorted(kids, key=lambda k: k[2])[:3], sorted(kids, key=lambda k: k[2])[3:]
    assert [k[0] for k in first] == [0, 1, 2] and [k[0] for k in second] == [0, 1, 2]
    assert max(k[2] for k in first) < min(k[2] for k in second)


class _FailOnce(BaseHTTPRequestHandler):
    """Answers {"i": i} for `/?i=…`, except a 500 the first time it is asked for i = 2."""

    def do_GET(self) -> None:
        i = int(parse_qs(urlsplit(self.path).query)["i"][0])
        with self.server.lock:  # type: ignore[attr-defined]
            asked = self.server.asked  # type: ignore[attr-defined]
            asked[i] = asked.get(i, 0) + 1
            fail = i == 2 and asked[i] == 1
        payload = b"first time" if fail else json.dumps({"i": i}).encode()
        self.send_response(500 if fail else 200)
        self.send_header("Content-Type", "text/plain" if fail else "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fail_once_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FailOnce)
    server.daemon_threads = True
    server.lock, server.asked = threading.Lock(), {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_retried_loop_gathers_only_the_iterations_of_its_last_attempt(
        api: ApiHelper, inline_worker: Any, database_url: str, fail_once_url: str) -> None:
    # Given a count loop whose iteration 2 fails the first time only, and a loop that may retry
    body = [{"id": "get", "type": "http", "config": {"url": fail_once_url, "query": {"i": "{{ index }}"}}}]
    definition = loop_workflow({"mode": "count", "count": 5, "nodes": body, "outputs": {"i": "{{ get.json.i }}"}},
                               node={"retry": {"max_attempts": 2, "backoff_s": 0.01, "jitter": False}})
    run = api.wait(api.submit(api.create_workflow(definition)))
    # Then the second attempt succeeded, and its outputs hold its own 5 iterations, not the first's
    assert run["status"] == "succeeded", run
    assert api.node(run, "L")["attempts"] == 2
    assert run["outputs"]["i"] == [0, 1, 2, 3, 4]
    assert run["outputs"]["iterations"] == 5
    assert [k[0] for k in iterations_of(database_url, run["run_id"])] == [0, 0, 1, 1, 2, 2, 3, 4]


def test_on_error_applies_to_a_loop_as_to_any_node(api: ApiHelper, inline_worker: Any) -> None:
    definition = failing_at(1, on_error="default", default_output={"i": []})
    run = api.wait(api.submit(api.create_workflow(definition)))
    assert run["status"] == "succeeded", run
    assert run["outputs"]["i"] == []


def test_duplicate_messages_of_the_loop_and_its_iterations_change_nothing(
        api: ApiHelper, inline_worker: Any, database_url: str) -> None:
    # Given a count loop with a variable and outputs
    config = {"mode": "count", "count": 4, "variables": {"total": 0},
              "nodes": [{"id": "add", "type": "set_variable", "config": {"values": {"total": "{{ vars.total + index }}"}}}],
              "outputs": {"seen": "{{ vars.total }}"}}
    run_id = api.submit(api.create_workflow(loop_workflow(config)))
    # When every message (the loop node's and each iteration's) is delivered twice, and every
    # message seen so far is delivered again after each step
    seen: list[tuple[str, str]] = []
    while (message := inline_worker.messages.pop_due()) is not None:
        seen.append(message)
        inline_worker.executor.run_node(*message)
        inline_worker.executor.run_node(*message)
        for old in seen:
            inline_worker.executor.run_node(*old)
        inline_worker.drain()  # what the duplicates sent, if anything
    run = api.wait(run_id)
    # Then the run is as if each were delivered once
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"seen": [0, 0, 1, 3], "variables": {"total": 6}, "iterations": 4}
    assert [k[0] for k in iterations_of(database_url, run_id)] == [0, 1, 2, 3]
    assert api.node(run, "L")["attempts"] == 1


def test_cancelling_the_run_cancels_the_live_iteration_and_starts_no_other(
        api: ApiHelper, inline_worker: Any, database_url: str) -> None:
    config = {"mode": "count", "count": 50,
              "nodes": [{"id": "a", "type": "template", "config": {"template": "{{ index }}"}},
                        {"id": "b", "type": "template", "config": {"template": "{{ a.text }}"}}]}
    run_id = api.submit(api.create_workflow(loop_workflow(config)))
    for _ in range(8):  # the loop node, a few iterations, and into the next
        inline_worker.run_next()
    assert api.client.post(f"/v1/runs/{run_id}/cancel").status_code == 202
    inline_worker.drain()
    run = api.run(run_id)
    assert run["status"] == "cancelled"
    kids = iterations_of(database_url, run_id)
    assert 1 < len(kids) < 50
    assert {k[1] for k in kids[:-1]} == {"succeeded"} and kids[-1][1] == "cancelled"


def test_a_loop_of_1000_iterations_keeps_a_flat_cost_per_iteration(
        api: ApiHelper, inline_worker: Any, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a count loop of 1,000 iterations (the default cap) with a variable and an output
    config = {"mode": "count", "count": 1000, "variables": {"total": 0},
              "nodes": [{"id": "add", "type": "set_variable", "config": {"values": {"total": "{{ vars.total + index }}"}}}],
              "outputs": {"i": "{{ index }}"}}
    run_id = api.submit(api.create_workflow(loop_workflow(config)))
    # When it runs, the CPU time this process spends per iteration is measured from one iteration's
    # end to the next one's (CPU, not wall time: other processes loading the machine do not count,
    # and work that grows with the loop, such as state rewritten per iteration, does)
    ends: list[float] = []
    started = time.perf_counter()
    while (message := inline_worker.messages.pop_due()) is not None:
        inline_worker.executor.run_node(*message)
        if message[0] == run_id:  # the loop node: it just started the next iteration (or finished)
            ends.append(time.process_time())
    elapsed = time.perf_counter() - started
    run = api.run(run_id)
    # Then it succeeded with every output in order
    assert run["status"] == "succeeded", run
    assert run["outputs"]["i"] == list(range(1000))
    assert run["outputs"]["variables"] == {"total": sum(range(1000))}
    # And an iteration late in the loop costs about what an early one did (reported; a generous bound)
    per_iteration = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    assert len(per_iteration) == 1000
    first = statistics.median(per_iteration[:100])
    last = statistics.median(per_iteration[-100:-1])  # the very last one gathers the outputs
    with capsys.disabled():
        print(f"\nloop of 1000: {elapsed:.2f}s in all; per iteration: first tenth {first * 1000:.2f} ms, "
              f"last tenth {last * 1000:.2f} ms, ratio {last / first:.2f}; the final gather "
              f"{per_iteration[-1] * 1000:.2f} ms")
    assert last < first * 2.5


@pytest.mark.parametrize(("definition", "node_id", "field", "words"), [
    ({"nodes": [{"id": "s", "type": "set_variable", "config": {"values": {"x": 1}}}]},
     "s", "type", "only in the body of a 'loop' node"),
    ({"nodes": [{"id": "B", "type": "batch", "config": {"items": [1], "nodes": [{"id": "b", "type": "break"}]}}]},
     "B/b", "type", "only in the body of a 'loop' node"),
    (loop_workflow({"mode": "count", "count": 2, "variables": {"n": 0},
                    "nodes": [{"id": "s", "type": "set_variable", "config": {"values": {"m": 1}}}]}),
     "L/s", "config.values.m", "'m' is not a variable of the loop"),
    (loop_workflow({"mode": "while", "nodes": [{"id": "c", "type": "continue"}]}),
     "L", "config.condition", "mode 'while' needs config.condition"),
    (loop_workflow({"mode": "while", "condition": "{{ vars.n }}", "nodes": [{"id": "c", "type": "continue"}]}),
     "L", "config.condition", "without {{ }}"),
    (loop_workflow({"mode": "count", "count": 2, "nodes": [{"id": "t", "type": "template",
                                                            "config": {"template": "{{ vars.n }}{{ outer.x }}"}}]}),
     "L/t", "config.template", "unknown reference 'outer'"),
])
def test_bad_loop_definitions_are_refused_naming_the_node_and_field(api: ApiHelper, definition: dict[str, Any],
                                                                    node_id: str, field: str, words: str) -> None:
    response = api.client.post("/v1/workflows", json={"name": "bad", "definition": definition})
    assert response.status_code == 422, response.get_json()
    problems = response.get_json()["errors"]
    assert any(p["node_id"] == node_id and p["field"] == field and words in p["message"] for p in problems), problems


def test_a_loop_nested_in_a_loop_runs_each_inner_loop_with_its_own_variables(api: ApiHelper,
                                                                             inline_worker: Any) -> None:
    inner = {"id": "inner", "type": "loop", "inputs": {"row": "{{ index }}"},
             "config": {"mode": "count", "count": 3, "variables": {"acc": ""},
                        "nodes": [{"id": "put", "type": "set_variable",
                                   "config": {"values": {"acc": "{{ vars.acc }}{{ inputs.row }}{{ index }} "}}}]}}
    config = {"mode": "count", "count": 2, "variables": {"rows": 0},
              "nodes": [inner, {"id": "inc", "type": "set_variable", "config": {"values": {"rows": "{{ vars.rows + 1 }}"}}}],
              "outputs": {"row": "{{ inner.variables.acc }}"}}
    run = api.wait(api.submit(api.create_workflow(loop_workflow(config))))
    assert run["status"] == "succeeded", run
    assert run["outputs"]["row"] == ["00 01 02 ", "10 11 12 "]
    assert run["outputs"]["variables"] == {"rows": 2}
