"""The app's JSON responses, written by orjson: a poll's body cost a tenth of what `json.dumps` did.

What it writes is what Flask's own provider writes (the same compact separators, non-ASCII as is,
keys in their order, the trailing newline, dates as HTTP dates, `Decimal` and `UUID` as strings,
dataclasses as objects, the same numbers), except that a float's exponent may be spelt otherwise
(`1e-05` is `0.00001`, `1e+20` is `1e20`: the same value) and that the one value JSON has no word
for, a float NaN or infinity, becomes `null` instead of the invalid `NaN` (none of ours can hold
one: PostgreSQL's jsonb and our request checks refuse them). Whatever orjson refuses (an integer past 64 bits, a key that is
not a string, a lone surrogate) and any pretty-printed or ASCII-only output go to Flask's provider,
which answers as it always did.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from flask.json.provider import DefaultJSONProvider

if TYPE_CHECKING:
    from werkzeug.sansio.response import Response

# dates and dataclasses through Flask's `default`, so they read as they did
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider, with orjson writing the common case."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """`json.dumps` with the app's settings (orjson's output when no other argument is given)."""
        if kwargs or self.ensure_ascii:
            return super().dumps(obj, **kwargs)
        try:
            return orjson.dumps(obj, default=self.default, option=self._options()).decode()
        except orjson.JSONEncodeError:
            return super().dumps(obj)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        """A JSON response of the arguments, as `jsonify` makes it."""
        if self.ensure_ascii or self.compact is False or (self.compact is None and self._app.debug):
            return super().response(*args, **kwargs)
        obj = self._prepare_response_obj(args, kwargs)
        try:
            body = orjson.dumps(obj, default=self.default, option=self._options() | orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:
            return super().response(obj)
        # typed as werkzeug's sans-IO class, whose first argument is the status; the app's is Flask's
        return self._app.response_class(body, mimetype=self.mimetype)  # type: ignore[arg-type]

    def _options(self) -> int:
        return _OPTIONS | orjson.OPT_SORT_KEYS if self.sort_keys else _OPTIONS
