"""Reading a process's JSON log lines (docs/operations.md "Logs") in tests."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def log_events(log: Path | str, event: str) -> list[dict[str, Any]]:
    """The JSON lines of a log file (or text) whose `event` is `event`, in order."""
    text = log.read_text(errors="replace") if isinstance(log, Path) else log
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                found.append(record)
    return found
