"""gunicorn settings of the `web` process: the gevent worker, so open event streams cost no thread.

Loaded as a config file (`gunicorn -c api/gunicorn_conf.py`, see `api.cli.supervisor.web_command`
and the Procfile); it imports nothing of ours, so the master process stays free of the app.
Each worker process monkey-patches the standard library (`gevent.monkey.patch_all()`, done by
gunicorn's gevent worker after the fork and before it imports the app, which is never
preloaded): threads become greenlets, and psycopg 3 (>= 3.1.14), redis-py, SQLAlchemy's pool
and our pub/sub listener all wait cooperatively. Why gevent: docs/streaming.md.
"""
from __future__ import annotations

import os
import resource
from typing import Any

worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Open connections (streams included) one web process serves at once; past it, new ones wait
# in the listen backlog. Each is a greenlet (a few KB) and a socket.
worker_connections = int(os.environ.get("WEB_CONNECTIONS", "2000"))


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


def post_worker_init(worker: Any) -> None:
    """Refuse to serve unpatched: a blocking call would stall every stream of the process."""
    if worker.cfg.worker_class_str == "gevent":
        from gevent import monkey

        for module in ("socket", "select", "threading", "time"):
            if not monkey.is_module_patched(module):
                raise RuntimeError(f"gevent did not patch '{module}'; the web process would block")
