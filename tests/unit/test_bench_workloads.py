"""The benchmark's workloads are workflows the engine accepts, of the shape the peers mirror.

bench/run_all.py compares Relayflow with Celery and DBOS on these shapes (docs/benchmarks.md):
a wrong edge here would compare a different graph from the peers' chain and chord.
"""
from __future__ import annotations

from bench.harness import fanout, linear
from bench.peer_bench import PEERS, missing_peers
from engine.compiler import compile_workflow


def test_fanout_is_root_then_parallel_nodes_then_one_join() -> None:
    wf = compile_workflow(fanout(100))
    assert wf.roots == ("root",)
    leaves = [f"f{i}" for i in range(100)]
    assert set(wf.nodes["root"].successors) == set(leaves)
    assert all(wf.nodes[leaf].preds == ("root",) for leaf in leaves)
    assert set(wf.nodes["join"].preds) == set(leaves)
    assert len(wf.nodes) == 102


def test_linear_is_a_chain_of_the_given_length() -> None:
    wf = compile_workflow(linear(10))
    assert wf.roots == ("n0",)
    assert [wf.nodes[f"n{k}"].preds for k in range(1, 10)] == [(f"n{k - 1}",) for k in range(1, 10)]


def test_peers_not_installed_are_named_not_raised(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(PEERS, "dbos", "no_such_module_for_the_bench")
    assert "dbos" in missing_peers()
