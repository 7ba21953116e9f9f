"""The `batch` node: one child run of its inline body per item, at most `concurrency` at once,
outputs gathered once in item order; `on_item_error`; retries; duplicates; cancel.

Graph semantics run on the in-process worker (`inline_worker`); the crash test with a real worker
group is in test_batch_faults.py.
"""
from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.conftest import ApiHelper

pytestmark = pytest.mark.integration


def batch_workflow(**config: Any) -> dict[str, Any]:
    """Square each number with a two-node body; `fail_on` makes an item fail (a code error)."""
    body = [{"id": "square", "type": "code",
             "config": {"code": "def main(args):\n"
                                "    if args['n'] in args['fail_on']:\n"
                                "        raise ValueError('no ' + str(args['n']))\n"
                                "    return {'sq': args['n'] * args['n']}\n"},
             "outputs": {"sq": "integer"},
             "inputs": {"n": "{{ item }}", "fail_on": "{{ inputs.fail_on }}"}},
            {"id": "label", "type": "template", "config": {"template": "{{ index }}:{{ square.sq }}{{ inputs.suffix }}"}}]
    node: dict[str, Any] = {"id": "each", "type": "batch",
                            "inputs": {"suffix": "{{ inputs.suffix }}", "fail_on": "{{ inputs.fail_on }}"},
                            "config": {"items": "{{ inputs.numbers }}", "nodes": body,
                                       "outputs": {"sq": "{{ square.sq }}", "label": "{{ label.text }}"}, **config}}
    return {"inputs": {"numbers": {"type": "array", "required": True}, "suffix": {"type": "string", "default": ""},
                       "fail_on": {"type": "array", "default": []}},
            "nodes": [node, {"id": "total", "type": "code",
                             "config": {"code": "def main(args):\n    return {'sum': sum(x for x in args['xs'] if x)}\n"},
                             "outputs": {"sum": "integer"},
                             "inputs": {"xs": "{{ each.sq }}"}}],
            "outputs": {"sq": "{{ each.sq }}", "label": "{{ each.label }}", "errors": "{{ each.errors }}",
                        "sum": "{{ total.sum }}"}}


def connect(database_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def children(api: ApiHelper, run_id: str) -> list[dict[str, Any]]:
    found, cursor = [], None
    while True:
        response = api.client.get(f"/v1/runs?parent={run_id}&limit=200" + (f"&cursor={cursor}" if cursor else ""))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        found += body["runs"]
        cursor = body["next_cursor"]
        if not cursor:
            return found


def test_a_batch_maps_its_body_over_the_items_in_item_order(api: ApiHelper, inline_worker: Any) -> None:
    # Given a batch of 25 items, 4 at a time
    workflow = api.create_workflow(batch_workflow(concurrency=4))
    numbers = list(range(25))
    # When it runs
    run = api.wait(api.submit(workflow, {"numbers": numbers, "suffix": "!"}))
    # Then every item ran its two-node body once, and the outputs are arrays in item order
    assert run["status"] == "succeeded", run
    assert run["outputs"]["sq"] == [n * n for n in numbers]
    assert run["outputs"]["label"] == [f"{i}:{n * n}!" for i, n in enumerate(numbers)]
    assert run["outputs"]["errors"] == []
    assert run["outputs"]["sum"] == sum(n * n for n in numbers)
    each = api.node(run, "each")
    assert each["attempts"] == 1
    assert each["progress"] == {"done": 25, "total": 25, "started": 25}
    # And each item is a child run of the batch node, listed by parent, not among the space's runs
    kids = children(api, run["run_id"])
    assert sorted(k["item_index"] for k in kids) == list(range(25))
    assert all(k["parent_node_id"] == "each" and k["status"] == "succeeded" for k in kids)
    listed = api.client.get("/v1/runs?limit=200").get_json()["runs"]
    assert [r["run_id"] for r in listed if r["run_id"] in {k["run_id"] for k in kids}] == []
    child = api.run(kids[0]["run_id"])
    assert {n["node_id"] for n in child["nodes"]} == {"square", "label"}
    assert child["inputs"]["item"] == numbers[child["item_index"]]


def test_no_more_than_concurrency_items_run_at_once(api: ApiHelper, inline_worker: Any, database_url: str) -> None:
    workflow = api.create_workflow(batch_workflow(concurrency=3))
    run_id = api.submit(workflow, {"numbers": list(range(12))})
    # the in-process worker runs one message at a time: count started children after each step
    peak = 0
    with connect(database_url) as conn:
        while inline_worker.run_next():
            live = conn.execute("SELECT count(*) FROM runs WHERE parent_run_id = %s AND status IN ('running') "
                                "OR (parent_run_id = %s AND status = 'queued' AND EXISTS (SELECT 1 FROM node_runs n "
                                "WHERE n.run_id = runs.id AND n.status <> 'waiting'))", (run_id, run_id)).fetchone()
            peak = max(peak, live[0])
    run = api.run(run_id)
    assert run["status"] == "succeeded", run
    assert peak == 3


def test_an_empty_batch_succeeds_at_once_with_empty_arrays(api: ApiHelper, inline_worker: Any) -> None:
    run = api.wait(api.submit(api.create_workflow(batch_workflow()), {"numbers": []}))
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"sq": [], "label": [], "errors": [], "sum": 0}


def test_on_item_error_fail_fails_the_node_naming_the_item_and_cancels_the_rest(api: ApiHelper,
                                                                                 inline_worker: Any) -> None:
    workflow = api.create_workflow(batch_workflow(concurrency=2))
    run = api.wait(api.submit(workflow, {"numbers": list(range(10)), "fail_on": [3]}))
    assert run["status"] == "failed", run
    assert "item 3" in run["error"]["message"] and "no 3" in run["error"]["message"]
    kids = children(api, run["run_id"])
    by_index = {k["item_index"]: k["status"] for k in kids}
    assert by_index[3] == "failed"
    # items after the failure never ran: they were cancelled, not left queued
    assert {by_index[i] for i in range(6, 10)} == {"cancelled"}
    assert "queued" not in by_index.values() and "running" not in by_index.values()


def test_on_item_error_continue_keeps_nulls_and_lists_the_errors(api: ApiHelper, inline_worker: Any) -> None:
    workflow = api.create_workflow(batch_workflow(concurrency=3, on_item_error="continue"))
    run = api.wait(api.submit(workflow, {"numbers": [1, 2, 3, 4], "fail_on": [2, 4]}))
    assert run["status"] == "succeeded", run
    assert run["outputs"]["sq"] == [1, None, 9, None]
    assert [e["index"] for e in run["outputs"]["errors"]] == [1, 3]
    assert "no 2" in run["outputs"]["errors"][0]["error"]["message"]
    assert run["outputs"]["sum"] == 10


def test_on_item_error_drop_leaves_failed_items_out(api: ApiHelper, inline_worker: Any) -> None:
    workflow = api.create_workflow(batch_workflow(on_item_error="drop"))
    run = api.wait(api.submit(workflow, {"numbers": [1, 2, 3, 4], "fail_on": [2]}))
    assert run["status"] == "succeeded", run
    assert run["outputs"]["sq"] == [1, 9, 16]
    assert run["outputs"]["label"] == ["0:1", "2:9", "3:16"]


def test_a_failed_batch_is_retried_with_new_items(api: ApiHelper, inline_worker: Any, database_url: str) -> None:
    # Given a batch whose first attempt fails at item 1 and that may retry once
    definition = batch_workflow(concurrency=1)
    definition["nodes"][0]["retry"] = {"max_attempts": 2, "backoff_s": 0.01, "jitter": False}
    run_id = api.submit(api.create_workflow(definition), {"numbers": [5, 6, 7], "fail_on": [6]})
    run = api.wait(run_id)
    # Then both attempts failed on item 1, each with children of its own
    assert run["status"] == "failed", run
    assert api.node(run, "each")["attempts"] == 2
    with connect(database_url) as conn:
        epochs = conn.execute("SELECT count(DISTINCT parent_epoch), count(*) FILTER (WHERE status = 'failed') "
                              "FROM runs WHERE parent_run_id = %s", (run_id,)).fetchone()
    assert epochs == (2, 2)


def test_items_over_max_items_are_refused_naming_the_limit(api: ApiHelper, inline_worker: Any) -> None:
    run = api.wait(api.submit(api.create_workflow(batch_workflow(max_items=3)), {"numbers": [1, 2, 3, 4]}))
    assert run["status"] == "failed"
    assert "4 items, over the limit of 3 (config.max_items)" in run["error"]["message"]
    assert children(api, run["run_id"]) == []


def test_a_body_sees_the_enclosing_nodes_it_references(api: ApiHelper, inline_worker: Any) -> None:
    # Given a node before the batch, referenced directly by a body node (as Coze's batch allows)
    definition = batch_workflow()
    definition["nodes"].insert(0, {"id": "prep", "type": "template", "config": {"template": "#"}})
    definition["nodes"][1]["config"]["nodes"][1]["config"]["template"] = "{{ prep.text }}{{ index }}:{{ square.sq }}"
    run = api.wait(api.submit(api.create_workflow(definition), {"numbers": [2, 3]}))
    # Then the batch waited for it, and every item saw its outputs
    assert run["status"] == "succeeded", run
    assert run["outputs"]["label"] == ["#0:4", "#1:9"]


def test_a_body_that_references_a_later_node_or_no_node_is_refused_naming_the_inner_node(api: ApiHelper) -> None:
    definition = batch_workflow()
    definition["nodes"][0]["config"]["nodes"][1]["config"]["template"] = "{{ nowhere.x }}"
    response = api.client.post("/v1/workflows", json={"name": "bad", "definition": definition})
    assert response.status_code == 422
    assert response.get_json()["errors"] == [{
        "node_id": "each/label", "field": "config.template",
        "message": "unknown reference 'nowhere': no node has that id (inside a body: its inputs, index, item, "
                   "its own nodes and the enclosing graph's nodes)"}]
    # `total` depends on the batch, so the batch depending on it is a cycle
    definition["nodes"][0]["config"]["nodes"][1]["config"]["template"] = "{{ total.sum }}"
    response = api.client.post("/v1/workflows", json={"name": "bad", "definition": definition})
    assert response.status_code == 422
    problems = response.get_json()["errors"]
    assert any(p["message"].startswith("cycle: each → total → each") for p in problems), problems


def test_cancelling_the_run_cancels_every_item_and_nothing_starts_after(api: ApiHelper, inline_worker: Any) -> None:
    workflow = api.create_workflow(batch_workflow(concurrency=2))
    run_id = api.submit(workflow, {"numbers": list(range(8))})
    for _ in range(6):  # the batch node and a few body nodes
        inline_worker.run_next()
    assert api.client.post(f"/v1/runs/{run_id}/cancel").status_code == 202
    inline_worker.drain()
    kids = children(api, run_id)
    assert len(kids) == 8
    assert {k["status"] for k in kids} <= {"succeeded", "cancelled"}
    # an item cut short keeps what it finished; items that never started have nothing but cancelled nodes
    statuses = [{n["status"] for n in api.run(kid["run_id"])["nodes"]} for kid in kids if kid["status"] == "cancelled"]
    assert all(s <= {"succeeded", "cancelled"} for s in statuses)
    assert sum(1 for s in statuses if s == {"cancelled"}) >= 4


def test_a_node_level_batch_runs_the_node_once_per_item(api: ApiHelper, inline_worker: Any) -> None:
    # Given Coze's batch mode on a node: `batch:` on a template node that references the run's
    # inputs, an earlier node and the item
    definition = {
        "inputs": {"names": {"type": "array", "required": True}, "greeting": {"type": "string", "default": "hi"}},
        "nodes": [{"id": "mark", "type": "template", "config": {"template": "!"}},
                  {"id": "greet", "type": "template", "batch": {"items": "{{ inputs.names }}", "concurrency": 2},
                   "config": {"template": "{{ inputs.greeting }} {{ item }}{{ mark.text }} #{{ index }}"}},
                  {"id": "joined", "type": "template", "config": {"template": "{{ greet.text | join(', ') }}"}}],
        "outputs": {"all": "{{ joined.text }}", "texts": "{{ greet.text }}"}}
    run = api.wait(api.submit(api.create_workflow(definition), {"names": ["ann", "bo", "cy"]}))
    # Then the node ran once per item, its output an array in item order
    assert run["status"] == "succeeded", run
    assert run["outputs"]["texts"] == ["hi ann! #0", "hi bo! #1", "hi cy! #2"]
    assert run["outputs"]["all"] == "hi ann! #0, hi bo! #1, hi cy! #2"
    greet = api.node(run, "greet")
    assert greet["type"] == "batch" and greet["progress"]["total"] == 3


def test_a_node_level_batch_with_bad_keys_or_dynamic_outputs_is_refused(api: ApiHelper) -> None:
    def refused(node: dict[str, Any]) -> list[dict[str, Any]]:
        response = api.client.post("/v1/workflows", json={"name": "bad", "definition": {"nodes": [node]}})
        assert response.status_code == 422
        return list(response.get_json()["errors"])

    assert refused({"id": "n", "type": "template", "config": {"template": "x"}, "batch": {"items": [1], "size": 2}}) == [
        {"node_id": "n", "field": "batch",
         "message": "unknown key 'size'; allowed keys: concurrency, items, max_items, on_item_error"}]
    assert refused({"id": "n", "type": "template", "config": {"template": "x"}, "batch": {"concurrency": 2}})[0][
        "message"].startswith("'items' is required")
    # an error inside the node is named as the body's node
    [problem] = refused({"id": "n", "type": "template", "config": {"template": "{{ nope }}"}, "batch": {"items": [1]}})
    assert problem["node_id"] == "n/n" and "unknown reference 'nope'" in problem["message"]


def test_an_item_cancelled_before_its_turn_is_skipped_and_the_batch_still_ends(api: ApiHelper,
                                                                                 inline_worker: Any) -> None:
    # Given a batch that runs one item at a time, with the option to go on past failed items
    workflow = api.create_workflow(batch_workflow(concurrency=1, on_item_error="continue"))
    run_id = api.submit(workflow, {"numbers": list(range(6))})
    inline_worker.run_next()  # the batch node starts its items
    kids = {k["item_index"]: k["run_id"] for k in children(api, run_id)}
    # When item 3, not started yet, is cancelled on its own
    assert api.client.post(f"/v1/runs/{kids[3]}/cancel").status_code == 202
    run = api.wait(run_id)
    # Then the other items all ran, one at a time, and the batch ended with item 3 listed as not done
    assert run["status"] == "succeeded", run
    assert run["outputs"]["sq"] == [0, 1, 4, None, 16, 25]
    assert [(e["index"], e["status"]) for e in run["outputs"]["errors"]] == [(3, "cancelled")]


def test_the_items_of_an_attempt_that_is_over_are_cancelled_in_bulk_by_the_reconciler(
        api: ApiHelper, inline_worker: Any, database_url: str) -> None:
    # Given a batch of 300 items, 2 at a time, whose node's attempt is over (its epoch moved on, as
    # after a crash between inserting the items and parking)
    run_id = api.submit(api.create_workflow(batch_workflow(concurrency=2)), {"numbers": list(range(300))})
    inline_worker.run_next()
    with connect(database_url) as conn:
        conn.execute("UPDATE node_runs SET epoch = epoch + 1 WHERE run_id = %s AND node_id = 'each'", (run_id,))
        conn.execute("UPDATE runs SET created_at = now() - interval '1 hour' WHERE parent_run_id = %s", (run_id,))
        # When the reconciler sweeps once
        inline_worker.sweep()
        # Then the 298 items that never started are cancelled (in one statement); the two that had
        # started are cancelled too or, if they ended first, decided nothing: the node still waits
        counts = dict(conn.execute("SELECT status, count(*) FROM runs WHERE parent_run_id = %s GROUP BY status",
                                   (run_id,)).fetchall())
        node_status = conn.execute("SELECT status FROM node_runs WHERE run_id = %s AND node_id = 'each'",
                                   (run_id,)).fetchone()[0]
    assert counts["cancelled"] >= 298 and sum(counts.values()) == 300 and set(counts) <= {"cancelled", "succeeded"}
    assert node_status == "delegated"


def test_the_reconciler_cancels_the_items_of_an_attempt_that_is_over_and_no_others(
        api: ApiHelper, inline_worker: Any, database_url: str) -> None:
    # Given two batches parked on their items, and the first one's attempt over (its epoch moved
    # on, as a crash and a new claim leave it), every item old enough to be swept
    workflow = api.create_workflow(batch_workflow(concurrency=2))
    over, live = (api.submit(workflow, {"numbers": list(range(6))}) for _ in range(2))
    inline_worker.run_next()
    inline_worker.run_next()
    assert {api.node(api.run(r), "each")["status"] for r in (over, live)} == {"delegated"}
    with connect(database_url) as conn:
        conn.execute("UPDATE node_runs SET epoch = epoch + 1 WHERE run_id = %s AND node_id = 'each'", (over,))
        conn.execute("UPDATE runs SET created_at = now() - interval '1 hour' WHERE parent_run_id = ANY(%s)",
                     ([over, live],))
    # When the reconciler sweeps (one visit per parent attempt, whatever the number of items)
    inline_worker.sweep()
    # Then every item of the attempt that is over is cancelled, started or not, and the other batch ran on
    assert {k["status"] for k in children(api, over)} == {"cancelled"}
    run = api.wait(live)
    assert run["status"] == "succeeded" and run["outputs"]["sq"] == [n * n for n in range(6)]
