"""Array parameters sent as literals (engine/store/lifecycle.py `text_array`, `signal_params`) reach
PostgreSQL as exactly the values given."""
from __future__ import annotations

import psycopg
import pytest

from engine.store.lifecycle import Signal, signal_params, text_array

pytestmark = pytest.mark.integration

AWKWARD = ["plain", "a,b", 'x"y', "back\\slash", "{}", "NULL", "", " spaced ", "ü🦦", "}{,\"\\"]


def test_a_text_array_literal_is_read_back_as_the_strings_given(database_url: str) -> None:
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for values in (AWKWARD, [], ["one"]):
            assert conn.execute("SELECT CAST(%s AS text[])", (text_array(values),)).fetchone() == (values,)


def test_signal_parameters_unnest_to_the_signals(database_url: str) -> None:
    signals = [Signal("b", 2, 1, 0, False), Signal("c-1", 1, 1, 1, True)]
    params = signal_params(signals)
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute("SELECT * FROM unnest(CAST(%(s_ids)s AS text[]), CAST(%(s_deg)s AS int[]), "
                            "CAST(%(s_cnt)s AS int[]), CAST(%(s_act)s AS int[]), CAST(%(s_any)s AS boolean[]))",
                            params).fetchall()
        assert rows == [("b", 2, 1, 0, False), ("c-1", 1, 1, 1, True)]
        assert conn.execute("SELECT count(*) FROM unnest(CAST(%(s_ids)s AS text[]))", signal_params([])).fetchone() == (0,)
