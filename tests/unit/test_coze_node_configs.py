"""The pure parts of Coze's simple nodes: reading an intent answer, splitting text. No I/O."""
from __future__ import annotations

import pytest

from engine.errors import NodeError, PermanentNodeError
from engine.nodes.intent import classify, parse_answer
from engine.nodes.text import split


def test_an_intent_answer_is_read_from_json_wrapped_in_prose() -> None:
    assert parse_answer("n", 'Sure: {"classificationId": 2, "reason": "parcel"} hope it helps', fast=False) == (2, "parcel")


def test_a_top_speed_answer_is_the_first_number() -> None:
    assert parse_answer("n", " 1\n", fast=True) == (1, "")


@pytest.mark.parametrize("text", ["no idea", '{"reason": "x"}', "{not json}"])
def test_an_answer_that_is_no_classification_is_a_retryable_error(text: str) -> None:
    with pytest.raises(NodeError) as caught:
        parse_answer("kind", text, fast=False)
    assert caught.value.retryable and "kind" in caught.value.message


@pytest.mark.parametrize("answered", [0, 3, -1, "two", None, True])
def test_an_id_the_list_lacks_takes_default(answered: object) -> None:
    assert classify(["a", "b"], answered, "r") == {"classification_id": 0, "reason": "r", "intent": None,
                                                   "branch": "default"}


def test_intent_i_takes_port_branch_i_minus_one() -> None:
    assert classify(["a", "b"], "2", "") == {"classification_id": 2, "reason": "", "intent": "b", "branch": "branch_1"}


def test_split_prefers_the_longest_delimiter_and_keeps_empty_pieces() -> None:
    assert split("t", "a. b.c..d", [".", ". "]) == ["a", "b", "c", "", "d"]


def test_split_of_null_is_empty_and_of_a_list_is_refused() -> None:
    assert split("t", None, [","]) == []
    with pytest.raises(PermanentNodeError):
        split("t", ["a"], [","])
