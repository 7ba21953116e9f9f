"""The test suite (fixtures in conftest.py).

Imported before any test module or fixture: where PYTHONDONTWRITEBYTECODE is set (to keep
`__pycache__` out of work trees), bytecode is cached under the temp folder instead, for the
test process and every process it starts. Without a cache, each of the suite's ~200 server and
CLI processes compiled our packages again (~0.3 s of CPU each), and each pytest process
compiled every test module, and rewrote the asserts of the hypothesis and schemathesis
packages (pytest does that for plugins), again (~3 s each).
"""
from __future__ import annotations

import os
import sys
import tempfile

if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
    sys.pycache_prefix = os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(
        tempfile.gettempdir(), f"relayflow-pycache-{os.getuid()}")
    sys.dont_write_bytecode = False
