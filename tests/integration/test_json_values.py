"""JSON values keep their exact value through Postgres, whichever reader parses them (engine/db.py,
`read_json`: orjson, or `json.loads` for what orjson would read differently)."""
from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.integration

BIG = 123456789012345678901234567890  # past 64 bits: orjson alone would read a float


def test_a_big_integer_stays_exact_from_node_to_node_and_in_the_poll(api: Any, inline_worker: Any) -> None:
    # Given a node that parses JSON with an integer past 64 bits, a 19-digit string and plain values
    text = f'{{"big": {BIG}, "id": "1234567890123456789", "small": 7, "name": "caf\\u00e9"}}'
    workflow_id = api.create_workflow({"nodes": [
        {"id": "parse", "type": "json_parse", "inputs": {"text": text}},
        {"id": "again", "type": "json_serialize", "inputs": {"value": "{{ parse.value }}"}},
    ], "outputs": {"text": "{{ again.text }}"}})
    # When it runs and is polled
    run = api.wait(api.submit(workflow_id))
    # Then the poll shows the parsed value exactly, and the next node read it exactly from Postgres
    assert run["status"] == "succeeded", run
    value = api.node(run, "parse")["output"]["value"]
    assert value == {"big": BIG, "id": "1234567890123456789", "small": 7, "name": "café"}
    assert isinstance(value["big"], int)
    assert str(BIG) in run["outputs"]["text"]


def test_the_reader_agrees_with_json_loads(settings: Any) -> None:
    # Given values as Postgres stores them (jsonb: exact numerics, text rebuilt from them)
    from sqlalchemy import text

    from engine.db import get_engine

    values = ['{"a": [1, 2.5, -3e-7, null, true]}', f'{{"n": {BIG}}}', f'[-{BIG}]', '{"n": 1e400}',
              '"\\u00e9\\ud83e\\udd9b"', '{"s": "99999999999999999999"}', '18446744073709551615']
    with get_engine(settings).connect() as conn:
        for raw in values:
            # When each is read back through the engine, as jsonb and as json
            as_jsonb = conn.execute(text("SELECT CAST(:v AS jsonb)"), {"v": raw}).scalar()
            as_json = conn.execute(text("SELECT CAST(:v AS json)"), {"v": raw}).scalar()
            # Then it is what json.loads reads from the same text
            assert as_json == json.loads(raw), raw
            assert as_jsonb == json.loads(conn.execute(text("SELECT CAST(CAST(:v AS jsonb) AS text)"),
                                                       {"v": raw}).scalar()), raw
