"""Server-Sent Events framing (text/event-stream), shared by the native and Coze streams."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Response

from engine import metrics

KEEPALIVE = ": keep-alive\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
# The schema flask-openapi3 documents for a streaming 200.
STREAM_RESPONSE: dict[str, Any] = {
    "description": "A text/event-stream of events; each has `id`, `event` and JSON `data`.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


def frame(event: str, data: Any, event_id: int | str | None = None) -> str:
    """One SSE frame; `data` is sent as one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def stream(frames: Iterable[str], retry_ms: int | None = 3000, on_close: Callable[[], None] | None = None) -> Response:
    """A streaming response; the client reconnects after `retry_ms` if the stream drops (None: no hint).

    `on_close` runs when the server closes the response, however it ends (finished, client gone,
    worker stopping), even if the body was never iterated.
    """

    def body() -> Iterator[str]:
        if retry_ms is not None:
            yield f"retry: {retry_ms}\n\n"
        yield from frames

    response = Response(body(), mimetype="text/event-stream", headers=HEADERS)
    metrics.stream_opened()
    response.call_on_close(metrics.stream_closed)  # closed however it ends, like on_close
    if on_close is not None:
        response.call_on_close(on_close)
    return response
