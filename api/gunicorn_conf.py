"""gunicorn settings of the `web` process: the gevent worker, so open event streams cost no thread.

Loaded as a config file (`gunicorn -c api/gunicorn_conf.py`, see `api.cli.supervisor.web_command`
and the Procfile); it imports nothing of ours, so the master process stays free of the app.
Each worker process monkey-patches the standard library (`gevent.monkey.patch_all()`, done by
gunicorn's gevent worker after the fork and before it imports the app, which is never
preloaded): threads become greenlets, and psycopg 3 (>= 3.1.14), redis-py, SQLAlchemy's pool
and our pub/sub listener all wait cooperatively. Why gevent: docs/streaming.md.

Logging (docs/operations.md "Logs"): one access line per request, a JSON object (or `key=value` pairs)
like every other line of the web process; each worker process configures logging and tracing
(docs/operations.md "Traces") once, after it loaded the app (`post_worker_init`), and flushes its spans
when it exits (`worker_exit`). A 413 closes its connection (`_close_after_refused_body`).
"""
from __future__ import annotations

import logging
import os
import resource
from collections.abc import Callable, Iterable
from typing import Any

worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Open connections (streams included) one web process serves at once; past it, new ones wait
# in the listen backlog. Each is a greenlet (a few KB) and a socket.
worker_connections = int(os.environ.get("WEB_CONNECTIONS", "2000"))
# Here rather than on each command line: `relayflow up` (api.cli.supervisor.web_command) and the
# Procfile both get it. No query string (it may carry what a client should not have put there)
# and no header but the user agent.
accesslog = "-"
access_log_format = ('event=http.request remote=%(h)s method=%(m)s path="%(U)s" status=%(s)s bytes=%(B)s '
                     'duration_ms=%(M)s agent="%(a)s"')


def _raise_fd_limit(wanted: int) -> None:
    """Raise the soft open-files limit towards `wanted` (never past the hard limit): every stream is a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def on_starting(server: Any) -> None:
    """In the master, before any fork: the workers inherit the limit."""
    # connections + the database pool, Redis, log files and gunicorn's own pipes
    _raise_fd_limit(server.cfg.worker_connections + 512)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < server.cfg.worker_connections + 64:
        server.log.warning("open-files limit %d is below WEB_CONNECTIONS=%d: raise `ulimit -n`",
                           soft, server.cfg.worker_connections)


def child_exit(server: Any, worker: Any) -> None:
    """In the master, when a worker process exited: its live gauges (open streams) stop counting.

    prometheus_client's own call, not ours: the master imports nothing of the app."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def post_worker_init(worker: Any) -> None:
    """Refuse to serve unpatched; configure logging once; close connections after a 413."""
    if worker.cfg.worker_class_str == "gevent":
        from gevent import monkey

        for module in ("socket", "select", "threading", "time"):
            if not monkey.is_module_patched(module):
                raise RuntimeError(f"gevent did not patch '{module}'; the web process would block")
    # The app is loaded by now (never preloaded): importing ours costs nothing more here.
    from engine import logfmt, telemetry
    from engine.settings import get_settings

    settings = get_settings()
    logfmt.configure(settings.log_level, settings.log_format)
    for handler in logging.getLogger("gunicorn.access").handlers:
        handler.setFormatter(logfmt.formatter(settings.log_format, message_is_pairs=True))
    telemetry.configure("relayflow-web", settings)  # after the fork: this process's own exporter
    worker.wsgi = _close_after_refused_body(worker.wsgi)


def worker_exit(server: Any, worker: Any) -> None:
    """Export the spans this web process still holds before it exits."""
    from engine import telemetry

    telemetry.shutdown()


StartResponse = Callable[..., Any]


def _close_after_refused_body(app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
                              ) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """Make a 413 say `Connection: close` and close the connection, as it then does.

    The app refuses an oversized body without reading it. Left as it was, gunicorn answered
    `keep-alive` and then skipped the unread body before the next request, within the
    keep-alive timeout: a body too large (or too slow) to skip in time dropped the connection
    the 413 had promised to keep, and the client's next request on it failed. Skipping a body
    of any size is also work an attacker chooses, so the connection closes instead.
    """
    def close_on_413(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if status.startswith("413"):
                # gunicorn hands the app its Response's bound method; a closing response sends
                # `Connection: close` (the app's own hop-by-hop headers are dropped by gunicorn)
                force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
                if force_close is not None:
                    force_close()
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return close_on_413
