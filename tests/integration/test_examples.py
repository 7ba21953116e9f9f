"""Every shipped example registers and runs to success with its demo inputs; the demo registers
examples that call others as sub-workflows after their callees."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from api.cli.client import Client, WorkflowFile
from api.cli.demo import callees, dependency_order, run_demos

pytestmark = pytest.mark.integration
# The point here is each example's graph, so they run in-process, except the LLM example: its
# primary model fails over to a fallback, and there LiteLLM trips a pydantic deprecation warning
# that the test process (filterwarnings = error) turns into a failed call (see test_llm_node.py).
LLM_EXAMPLES = {"llm-summary"}
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))
WORKFLOWS = {p.stem: WorkflowFile.read(p) for p in EXAMPLES}


def needed(name: str) -> list[WorkflowFile]:
    """The example `name` after every example it calls, directly or not, callees first."""
    found: dict[str, WorkflowFile] = {}
    todo = [name]
    while todo:
        current = todo.pop()
        if current not in found:
            found[current] = WORKFLOWS[current]
            todo += sorted(callees(found[current]) & set(WORKFLOWS))
    return dependency_order(found.values())


def test_each_example_is_named_after_its_file_and_calls_only_examples() -> None:
    # sub-workflow nodes call other examples by name: the name is the file's
    for stem, workflow in WORKFLOWS.items():
        assert workflow.name == stem
        assert callees(workflow) <= set(WORKFLOWS), stem


def test_dependency_order_puts_callees_first() -> None:
    def named(name: str, *calls: str) -> WorkflowFile:
        nodes = [{"id": f"n{i}", "type": "workflow", "config": {"workflow": c}} for i, c in enumerate(calls)]
        # one call inside an inline body, as a batch's body may hold a sub-workflow node
        definition = {"nodes": [{"id": "each", "type": "batch", "config": {"items": [], "nodes": nodes}}]}
        return WorkflowFile(name, None, definition if calls else {"nodes": []}, {})

    order = dependency_order([named("a", "b", "c"), named("b", "c"), named("c"), named("d", "elsewhere")])
    assert [w.name for w in order] == ["c", "d", "b", "a"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_to_success(api: Any, request: pytest.FixtureRequest, fake_llm: Any, path: Path) -> None:
    # fake_llm: the demo models (conf/model/demo-*.yaml) point at it, as `relayflow up --demo` does
    if path.stem in LLM_EXAMPLES:
        # One worker process (one LiteLLM import, seconds of CPU), two threads
        request.getfixturevalue("start_worker")(processes=1, threads=2)
    else:
        request.getfixturevalue("inline_worker")
    # an example that calls others (sub-workflow nodes) is saved after them, as the demo does
    *callee_files, workflow = needed(path.stem)
    for callee in callee_files:
        api.create_workflow(callee.definition, name=callee.name)
    run = api.wait(api.submit(api.create_workflow(workflow.definition, name=workflow.name), workflow.demo_inputs),
                   timeout_s=60)
    assert run["status"] == "succeeded", run
    assert run["outputs"] and all(v is not None for v in run["outputs"].values())


def test_the_demo_creates_callees_first_and_runs_every_example(
        web_server: str, token: str, start_worker: Any, tmp_path: Path) -> None:
    # Given examples where a caller sorts before its callee (subworkflow-… < word-stats), and a batch
    for name in ("subworkflow-word-stats", "word-stats", "batch-sentence-stats"):
        shutil.copy(EXAMPLES_DIR / f"{name}.yaml", tmp_path / f"{name}.yaml")
    start_worker(processes=1, threads=4)
    # When the demo runs them
    with Client(web_server, token) as client:
        succeeded = run_demos(client, tmp_path)
    # Then every one was created and started, and succeeded
    assert succeeded
