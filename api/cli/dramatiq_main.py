"""`python -m api.cli.dramatiq_main [dramatiq options]`: `dramatiq workers`, its main process logging
as its worker processes do (docs/operations.md "Logs").

Dramatiq's main process (which forks and watches the worker processes, and relays their output)
logs with its own text format; its lines (booting, a worker process that died) would be the only
ones of the stream that are not JSON. Configuring the root logger first makes dramatiq's own
`basicConfig` a no-op. The `workers` module is named, not imported: it is imported by each worker
process after the fork (api -> engine <- workers).
"""
from __future__ import annotations

import os
import sys

from engine import logfmt


def main() -> int:
    """Configure logging from RELAYFLOW_LOG_FORMAT/LEVEL, then run dramatiq's command line on `workers`."""
    level = os.environ.get("RELAYFLOW_LOG_LEVEL", "INFO").upper()
    log_format = os.environ.get("RELAYFLOW_LOG_FORMAT", "json").lower()
    # An invalid value is reported by each worker process's settings, naming the variable.
    logfmt.configure(level if level in logfmt.LEVELS else "INFO", log_format if log_format in logfmt.FORMATS else "json")
    from dramatiq.cli import main as dramatiq_main

    sys.argv = ["dramatiq", "workers", *sys.argv[1:]]
    return int(dramatiq_main() or 0)  # type: ignore[no-untyped-call]  # dramatiq has no annotations here


if __name__ == "__main__":
    sys.exit(main())
