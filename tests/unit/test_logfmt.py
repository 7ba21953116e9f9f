"""Log lines are one line each (a JSON object, or key=value pairs), whatever they carry, with key-shaped
secrets masked."""
from __future__ import annotations

import json
import logging
import shlex

from engine.logfmt import JsonFormatter, LogfmtFormatter, formatter


def _record(msg: str, exc: bool = False, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "relayflow.node", "levelno": logging.ERROR, "levelname": "ERROR",
                                    "msg": msg, **extra})
    if exc:
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            import sys

            record.exc_info = sys.exc_info()
    return record


def test_a_record_is_one_line_of_pairs_that_a_logfmt_reader_splits_back() -> None:
    line = LogfmtFormatter().format(_record("node attempt failed", exc=True, run_id="r-1", attempt=2,
                                            error='a "quoted"\nmulti-line = text'))
    assert "\n" not in line
    pairs = dict(token.split("=", 1) for token in shlex.split(line))
    assert pairs["level"] == "error" and pairs["logger"] == "relayflow.node" and pairs["msg"] == "node attempt failed"
    assert pairs["run_id"] == "r-1" and pairs["attempt"] == "2"
    assert pairs["error"] == 'a "quoted"\\nmulti-line = text'  # newlines stay escaped: the record stays one line
    assert "RuntimeError: boom" in pairs["exc"]


def test_a_key_shaped_secret_is_masked_whoever_logged_it() -> None:
    line = LogfmtFormatter().format(_record("provider said Incorrect API key sk-live-ABCDEFGHIJKLMNOP1234",
                                            detail="Bearer sk-other-0123456789abcdef"))
    assert "ABCDEFGHIJKLMNOP" not in line and "0123456789ab" not in line
    assert "sk-l***1234" in line


def test_a_json_record_is_one_line_that_parses_back_with_its_extra_keys() -> None:
    line = JsonFormatter().format(_record("node attempt failed", exc=True, run_id="r-1", attempt=2,
                                          error='a "quoted"\nmulti-line = text'))
    assert "\n" not in line
    record = json.loads(line)
    assert record["level"] == "error" and record["logger"] == "relayflow.node" and record["msg"] == "node attempt failed"
    assert record["run_id"] == "r-1" and record["attempt"] == 2  # numbers stay numbers
    assert record["error"] == 'a "quoted"\nmulti-line = text'
    assert "RuntimeError: boom" in record["exc"]


def test_a_key_shaped_secret_is_masked_in_json_lines_too() -> None:
    line = JsonFormatter().format(_record("provider said Incorrect API key sk-live-ABCDEFGHIJKLMNOP1234",
                                          detail="Bearer sk-other-0123456789abcdef"))
    assert "ABCDEFGHIJKLMNOP" not in line and "0123456789ab" not in line
    assert json.loads(line)["msg"].endswith("sk-l***1234")


def test_an_access_line_of_pairs_becomes_keys_of_the_json_object() -> None:
    access = 'event=http.request method=GET path="/v1/runs" status=200 agent="python-httpx/0.28 \\"x\\""'
    record = json.loads(formatter("json", message_is_pairs=True).format(_record(access)))
    assert record["event"] == "http.request" and record["path"] == "/v1/runs" and record["status"] == "200"
    assert record["agent"] == 'python-httpx/0.28 "x"' and "msg" not in record
    assert isinstance(formatter("logfmt"), LogfmtFormatter)


def test_a_json_line_is_stamped_in_utc_to_the_millisecond_as_isoformat_would() -> None:
    from datetime import UTC, datetime

    # a second's boundary, fractions that round up into the next millisecond or second, a round second
    for created in (1764747951.906, 1827125199.1649995, 1764747951.9999996, 1764747952.0, 1764747951.0004999):
        record = _record("node started")
        record.created = created
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert json.loads(JsonFormatter().format(record))["ts"] == expected
