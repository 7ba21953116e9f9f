"""Log lines, one per record: a JSON object (the default) or `key=value` pairs (logfmt), and
the one call that installs them.

The entry points call `configure` once: each worker process (workers/__init__.py) and each web
process (api/gunicorn_conf.py `post_worker_init`); nothing configures logging at import time of
an engine module. Engine modules log to `relayflow.*` loggers and pass the ids of what they
report as `extra` fields, which become keys of the line (docs/operations.md "Logs" lists them).

Why JSON by default: log shippers (Loki, Vector, Datadog, CloudWatch) index a JSON line's keys
without a parser rule, and `jq 'select(.run_id=="…")'` finds every line of a run. logfmt
(`RELAYFLOW_LOG_FORMAT=logfmt`) stays for people who read the lines themselves: the same keys,
and `grep run_id=<id>` finds a run's lines. Both formats mask key-shaped secrets.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import orjson

from engine.models.registry import mask_keys

# Attributes every LogRecord has: anything else on a record came from `extra` and is printed.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# `LogRecord.__init__` sets the standard attributes, always the same ones in the same order, and
# `extra` is added after them: a JSON line skips them by position (a worker writes two lines a node)
_FIRST_EXTRA = len(vars(logging.makeLogRecord({})))
MAX_VALUE_CHARS = 2000  # a provider's error text can be long; a line stays readable
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("json", "logfmt")
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')  # one key=value of a logfmt message


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
        pairs = [("ts", _stamp(record.created)), ("level", record.levelname.lower()), ("logger", record.name)]
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


class JsonFormatter(logging.Formatter):
    """`{"ts": …, "level": …, "logger": …, "msg": …, <extra keys>, ["exc": …]}` on one line, secrets masked.

    `message_is_pairs`: the record's message is `key=value` pairs (gunicorn's access line,
    api/gunicorn_conf.py); they become keys of the object.
    """

    def __init__(self, message_is_pairs: bool = False) -> None:
        super().__init__()
        self.message_is_pairs = message_is_pairs

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        line: dict[str, Any] = {"ts": _stamp(record.created), "level": record.levelname.lower(),
                                "logger": record.name}
        message = record.getMessage()
        if self.message_is_pairs:
            line.update((key, _unquote(value)) for key, value in _PAIR.findall(message))
        else:
            line["msg"] = message
        for key, value in islice(vars(record).items(), _FIRST_EXTRA, None):
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = _json_value(value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        # JSON escapes newlines, so a record stays one line; the masking is the last guard as in
        # logfmt (error texts are scrubbed where they are made).
        return mask_keys(_dumps(line))


def _dumps(line: dict[str, Any]) -> str:
    """The line as compact JSON: orjson, a sixth of `json.dumps`'s time (every worker writes two lines
    a node); `json.dumps` for what orjson refuses (an integer past 64 bits)."""
    try:
        return orjson.dumps(line, default=str).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(line, ensure_ascii=False, default=str, separators=(",", ":"))


_second: list[Any] = [None, ""]  # the last second stamped, and its text (a worker stamps hundreds a second)


def _stamp(created: float) -> str:
    """`2026-12-03T07:25:51.906Z`, as `datetime.isoformat(timespec="milliseconds")` writes it; the
    second's text is made once per second."""
    second = int(created)
    micros = round((created - second) * 1_000_000)  # as datetime rounds: the fraction, half to even
    if micros == 1_000_000:
        second, micros = second + 1, 0
    last = _second  # one read: another thread may replace it meanwhile, with an equally right pair
    if last[0] != second:
        last = [second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")]
        _second[:] = last
    return f"{last[1]}.{micros // 1000:03d}Z"


def _json_value(value: Any) -> Any:
    """Numbers, booleans and None as they are; long texts cut like logfmt's."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "…"
    if isinstance(value, dict | list | tuple):
        text = json.dumps(value, default=str)
        return value if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"
    return _json_value(str(value))


def _unquote(value: str) -> str:
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def formatter(log_format: str = "json", message_is_pairs: bool = False) -> logging.Formatter:
    """The formatter of `log_format` (`json` or `logfmt`)."""
    if log_format == "logfmt":
        return LogfmtFormatter(message_is_pairs)
    return JsonFormatter(message_is_pairs)


def configure(level: str = "INFO", log_format: str = "json") -> None:
    """Send every logger's records to stderr as one line each (`json` or `logfmt`) at `level` and above.

    Replaces the root logger's handlers (dramatiq's `basicConfig`, if it ran), so each record
    is written once. Library loggers propagate to it; gunicorn's own loggers keep theirs.
    """
    handler = logging.StreamHandler(sys.stderr)  # looked up now: dramatiq redirects it per process
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries that are chatty at INFO (one line per HTTP call to a model provider)
    for name in ("httpx", "httpcore", "LiteLLM", "LiteLLM Router", "litellm"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
