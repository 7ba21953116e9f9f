"""Every shipped example registers and runs to success with its demo inputs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration
# The point here is each example's graph, so they run in-process, except the LLM example: its
# primary model fails over to a fallback, and there LiteLLM trips a pydantic deprecation warning
# that the test process (filterwarnings = error) turns into a failed call (see test_llm_node.py).
LLM_EXAMPLES = {"llm-summary"}
EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_to_success(api: Any, request: pytest.FixtureRequest, fake_llm: Any, path: Path) -> None:
    # fake_llm: the demo models (conf/model/demo-*.yaml) point at it, as `relayflow up --demo` does
    if path.stem in LLM_EXAMPLES:
        # One worker process (one LiteLLM import, seconds of CPU), two threads
        request.getfixturevalue("start_worker")(processes=1, threads=2)
    else:
        request.getfixturevalue("inline_worker")
    doc = yaml.safe_load(path.read_text())
    inputs = doc.pop("demo_inputs", {})
    run = api.wait(api.submit(api.create_workflow(doc, name=path.stem), inputs), timeout_s=60)
    assert run["status"] == "succeeded", run
    assert run["outputs"] and all(v is not None for v in run["outputs"].values())
