"""`GET /metrics`: Prometheus text for every process of this host (docs/operations.md "Metrics"), and the
per-request HTTP counter. No token: like `/healthz`, it is for the operator's scraper; it shows
counts by route, node type, model and status, never a run, a space or a secret."""
from __future__ import annotations

from typing import Any

from flask import Flask, Response, request

from api.runtime import runtime
from engine import metrics


def scrape() -> Response:
    """Every process's series (the multiprocess folder) and the queue gauges read now."""
    views = runtime().store.views
    body, content_type = metrics.render([metrics.QueueCollector(views.queue_gauges)])
    return Response(body, content_type=content_type)


def init_app(app: Flask) -> None:
    """Serve `/metrics` and count each answered request by its route template."""
    app.add_url_rule("/metrics", "metrics", scrape, methods=["GET"])

    @app.after_request
    def _count(response: Any) -> Any:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.http_answered(rule, request.method, response.status_code)
        return response
