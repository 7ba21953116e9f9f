"""Output checking and successor-signal merging: pure decisions of the executor."""
from __future__ import annotations

import pytest

from engine.compiler import SuccessorSignal
from engine.errors import PermanentNodeError
from engine.outcomes import merge_signals
from engine.outputs import check_outputs


def test_declared_outputs_must_be_present_with_their_types() -> None:
    check_outputs("n", {"words": 3, "top": [], "extra": "ok"}, {"words": "integer", "top": "array"})
    with pytest.raises(PermanentNodeError, match="did not produce its declared output 'top'"):
        check_outputs("n", {"words": 3}, {"words": "integer", "top": "array"})
    with pytest.raises(PermanentNodeError, match="'words' is bool, declared integer"):
        check_outputs("n", {"words": True}, {"words": "integer"})
    with pytest.raises(PermanentNodeError, match="expected an object"):
        check_outputs("n", ["not", "a", "dict"], None)


def test_signals_to_one_successor_are_merged_and_sorted() -> None:
    merged = merge_signals([
        SuccessorSignal("z", 2, True, False),
        SuccessorSignal("a", 3, False, True),
        SuccessorSignal("a", 3, True, True),
    ])
    assert [(s.node_id, s.in_degree, s.count, s.active, s.join_any) for s in merged] == [
        ("a", 3, 2, 1, True), ("z", 2, 1, 1, False)]
