"""Log lines as `key=value` pairs (logfmt), one line per record, and the one call that installs them.

The entry points call `configure` once: each worker process (workers/__init__.py) and each web
process (api/gunicorn_conf.py `post_worker_init`); nothing configures logging at import time of
an engine module. Engine modules log to `relayflow.*` loggers and pass the ids of what they
report as `extra` fields, which become pairs of the line (docs/operations.md lists them).

Why logfmt rather than JSON: the same line is read by a person in `relayflow up`'s log files
and parsed by log shippers (Loki, Vector, Datadog and Grafana read logfmt as they read JSON);
`grep run_id=<id>` finds every line of a run in either case.
"""
from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

from engine.models.registry import mask_keys

# Attributes every LogRecord has: anything else on a record came from `extra` and is printed.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
MAX_VALUE_CHARS = 2000  # a provider's error text can be long; a line stays readable
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _value(value: Any) -> str:
    """One value as logfmt: bare when it is a simple token, else double-quoted with escapes."""
    text = "" if value is None else str(value)
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + "…"
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in escaped) + '"'


class LogfmtFormatter(logging.Formatter):
    """`ts=… level=… logger=… msg=… <extra pairs> [exc=…]` on one line, key-shaped secrets masked.

    `message_is_pairs`: the record's message is already `key=value` pairs (gunicorn's access
    line, api/gunicorn_conf.py) and is appended as it is.
    """

    def __init__(self, message_is_pairs: bool = False) -> None:
        super().__init__()
        self.message_is_pairs = message_is_pairs

    def format(self, record: logging.LogRecord) -> str:
        """The record as one logfmt line."""
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        pairs = [("ts", stamp.replace("+00:00", "Z")), ("level", record.levelname.lower()), ("logger", record.name)]
        message = record.getMessage()
        tail = message if self.message_is_pairs else ""
        if not self.message_is_pairs:
            pairs.append(("msg", message))
        pairs += [(key, value) for key, value in vars(record).items()
                  if key not in _STANDARD and not key.startswith("_")]
        if record.exc_info:
            pairs.append(("exc", self.formatException(record.exc_info)))
        line = " ".join(f"{key}={_value(value)}" for key, value in pairs)
        # A last guard: error texts are scrubbed where they are made (engine/models/calling.py);
        # a key-shaped string that got past that is still masked here.
        return mask_keys(f"{line} {tail}" if tail else line)


def configure(level: str = "INFO") -> None:
    """Send every logger's records to stderr as logfmt lines at `level` and above.

    Replaces the root logger's handlers (dramatiq's `basicConfig`, if it ran), so each record
    is written once. Library loggers propagate to it; gunicorn's own loggers keep theirs.
    """
    handler = logging.StreamHandler(sys.stderr)  # looked up now: dramatiq redirects it per process
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries that are chatty at INFO (one line per HTTP call to a model provider)
    for name in ("httpx", "httpcore", "LiteLLM", "litellm"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
