"""The "limit" comparator of bench/api_latency.py: about the least a poll can cost on this stack.

A bare Flask app, served by the very gunicorn command Relayflow's web runs
(`api.cli.supervisor.web_command`, api/gunicorn_conf.py: gevent, 2 processes, the access log),
with a small pool of psycopg connections (autocommit, as Relayflow's reads): `GET /runs/<id>`
reads the run's row in one round trip and answers it as JSON. No token, no node rows, no run
object: what Relayflow's poll costs on top of this is what its guarantees and its answer cost.
`LIMIT_DATABASE_URL` names the database (a libpq URL).
"""
from __future__ import annotations

import os
import queue
from typing import Any

import psycopg
from flask import Flask, jsonify
from psycopg.rows import dict_row

READ_RUN = "SELECT * FROM runs WHERE id = %s"


def create_app() -> Flask:
    """The app gunicorn serves (`bench.limit_app:create_app()`)."""
    app = Flask(__name__)
    url = os.environ["LIMIT_DATABASE_URL"]
    idle: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()

    def borrow() -> psycopg.Connection[Any]:
        try:
            return idle.get_nowait()
        except queue.Empty:
            return psycopg.connect(url, autocommit=True, row_factory=dict_row)  # type: ignore[arg-type]

    @app.get("/runs/<run_id>")
    def run(run_id: str) -> Any:
        conn = borrow()
        try:
            row = conn.execute(READ_RUN, (run_id,)).fetchone()
        except psycopg.Error:
            conn.close()
            raise
        idle.put(conn)
        return jsonify(row) if row is not None else (jsonify({"msg": "not found"}), 404)

    return app
