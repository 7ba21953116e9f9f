"""The app's JSON responses (api/json_provider.py) read as Flask's own provider wrote them."""
from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import uuid
from typing import Any

import pytest
from flask import Flask

from api.json_provider import OrjsonProvider


class Colour(enum.StrEnum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    at: datetime.datetime


def _body(provider_class: type | None, value: Any) -> bytes:
    app = Flask(__name__)
    if provider_class is not None:
        app.json = provider_class(app)
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    with app.app_context():
        return app.json.response(value).get_data()


@pytest.mark.parametrize("value", [
    {"z": 1, "a": [1, 2.5, 0.1, None, True], "text": "日本語 é", "nested": {"b": {"c": []}}},
    {"id": uuid.UUID(int=7), "cost": decimal.Decimal("1.10"), "colour": Colour.RED, "pair": (1, 2)},
    {"at": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC), "day": datetime.date(2024, 1, 2)},
    {"point": Point(1, datetime.datetime(2024, 1, 1))},
    {1: "a key that is not a string"},  # orjson refuses: Flask's provider answers
    {"big": 2**70},  # past 64 bits: Flask's provider answers
    [], None, "text",
], ids=["plain", "uuid-decimal-enum-tuple", "dates", "dataclass", "int-key", "big-int", "list", "none", "str"])
def test_a_response_body_is_byte_for_byte_flasks(value: Any) -> None:
    # Given the same value, When each provider writes it, Then the bodies are equal
    assert _body(OrjsonProvider, value) == _body(None, value)


def test_a_value_no_provider_can_write_fails_as_with_flasks() -> None:
    with pytest.raises(TypeError):
        _body(OrjsonProvider, {"s": {1, 2}})
