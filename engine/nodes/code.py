"""The `code` node: runs the user's Python `main(inputs)` in a separate, confined process.

The child gets a clean environment (no server secrets), a fresh temporary directory as its
working directory, an address-space limit, and the attempt's remaining time as a wall-clock
limit; its whole process group is killed when that runs out. See `code_runner` for the
child's side of the protocol.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, ClassVar, Literal

from pydantic import Field

from engine.errors import NodeError, NodeTimeout, PermanentNodeError
from engine.nodes.base import NodeConfig, NodeContext, NodeType

CHILD_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
MAX_REPORT_BYTES = 64 * 1024 * 1024
STDERR_TAIL_BYTES = 8 * 1024
JOIN_S = 5.0
RUNNER_PATH = Path(__file__).with_name("code_runner.py")


class CodeConfig(NodeConfig):
    """Config of a `code` node."""

    code: str
    language: Literal["python"] = "python"
    memory_mb: int | None = Field(default=None, ge=32, le=65536)


class CodeNode(NodeType[CodeConfig]):
    """Runs `code`, which defines `def main(inputs: dict) -> dict` (or `async def main`)."""

    type_name = "code"
    Config = CodeConfig
    # Source code is neither rendered nor scanned: `{{` may be legitimate Python.
    opaque_fields: ClassVar[frozenset[str]] = frozenset({"code"})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run the code in a child process and return what `main` returned."""
        try:
            payload = json.dumps({"code": self.config.code, "inputs": inputs}, ensure_ascii=True).encode("ascii")
        except (TypeError, ValueError) as exc:
            raise PermanentNodeError(f"code: the node's inputs are not JSON-serialisable: {exc}") from exc
        memory_mb = self.config.memory_mb or ctx.settings.code_memory_mb
        timeout_s = ctx.remaining_s()
        if timeout_s <= 0:
            raise NodeTimeout("code: no time left in the node's timeout to start the code")
        python = ctx.settings.code_python or sys.executable
        with tempfile.TemporaryDirectory(prefix="relayflow-code-", ignore_cleanup_errors=True) as tmp:
            # The runner is copied next to (not into) the working directory: an interpreter
            # without -P would put the runner's folder on sys.path, and ours holds `http.py`.
            runner = Path(tmp, "runner.py")
            runner.write_text(_runner_source(), encoding="utf-8")
            workdir = Path(tmp, "work")
            workdir.mkdir()
            argv = [python, "-I", "-X", "utf8", str(runner), str(memory_mb)]
            child = _run_child(argv, str(workdir), payload, timeout_s)
        if child.timed_out:
            raise NodeTimeout(f"code: did not finish within {timeout_s:.3g}s; its processes were killed")
        return _outputs(child, memory_mb)


@dataclass(frozen=True)
class _Child:
    returncode: int
    report: bytes
    report_truncated: bool
    stderr_tail: str
    timed_out: bool


class _Drain(threading.Thread):
    """Reads a pipe to its end, keeping at most `limit` bytes (the head or the tail)."""

    def __init__(self, stream: IO[bytes], limit: int, keep_tail: bool) -> None:
        super().__init__(daemon=True)
        self.stream, self.limit, self.keep_tail = stream, limit, keep_tail
        self.data = bytearray()
        self.truncated = False

    def run(self) -> None:
        """Read until EOF."""
        with self.stream:
            while chunk := self.stream.read(65536):
                self.data += chunk
                if len(self.data) > self.limit:
                    self.truncated = True
                    if self.keep_tail:
                        del self.data[: len(self.data) - self.limit]
                    else:
                        del self.data[self.limit:]


def _run_child(argv: list[str], cwd: str, payload: bytes, timeout_s: float) -> _Child:
    """Start the runner, feed it, wait at most `timeout_s`, and always kill its process group."""
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd, env=dict(CHILD_ENV), close_fds=True, start_new_session=True,
        )
    except OSError as exc:
        raise PermanentNodeError(f"code: cannot start the Python interpreter {argv[0]!r}: {exc}") from exc
    assert proc.stdin and proc.stdout and proc.stderr
    report = _Drain(proc.stdout, MAX_REPORT_BYTES, keep_tail=False)
    stderr = _Drain(proc.stderr, STDERR_TAIL_BYTES, keep_tail=True)
    report.start()
    stderr.start()
    feeder = threading.Thread(target=_feed, args=(proc.stdin, payload), daemon=True)
    feeder.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        # Also on success: background processes the code started must not outlive the node.
        _kill_group(proc.pid)
        proc.wait()
        for thread in (feeder, report, stderr):
            # Bounded: a process that escaped the group (setsid) may hold the pipes open.
            thread.join(timeout=JOIN_S)
    return _Child(
        returncode=proc.returncode,
        report=bytes(report.data),
        report_truncated=report.truncated,
        stderr_tail=stderr.data.decode("utf-8", errors="replace"),
        timed_out=timed_out,
    )


def _feed(stdin: IO[bytes], payload: bytes) -> None:
    try:
        with stdin:
            stdin.write(payload)
    except (BrokenPipeError, ValueError):
        pass  # the child died before reading everything; its exit status tells why


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _outputs(child: _Child, memory_mb: int) -> dict[str, Any]:
    """Turn the child's report (or its absence) into outputs or the right error."""
    memory_error = PermanentNodeError(f"code: memory limit exceeded ({memory_mb} MB); set memory_mb higher")
    if child.report_truncated:
        raise PermanentNodeError(f"code: outputs exceed {MAX_REPORT_BYTES // (1024 * 1024)} MB")
    if not child.report:
        if "MemoryError" in child.stderr_tail or "Cannot allocate memory" in child.stderr_tail:
            raise memory_error
        raise NodeError(
            f"code: the process exited with status {child.returncode} without a result"
            + (f":\n{_tail(child.stderr_tail)}" if child.stderr_tail.strip() else ""),
            retryable=True,
        )
    report = json.loads(child.report)
    if report["ok"]:
        return dict(report["outputs"])
    kind, message = report["kind"], report["message"]
    if kind == "memory":
        raise memory_error
    if kind == "exception":
        raise NodeError(
            f"code: {report['type']}: {message}" + (f"\n{report['traceback']}" if report["traceback"] else ""),
            retryable=True, error_type=report["type"],
        )
    prefixes = {"syntax": "code: syntax error: ", "no_main": "code: ", "not_dict": "code: ", "not_json": "code: "}
    raise PermanentNodeError(prefixes.get(kind, "code: ") + message)


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@lru_cache(maxsize=1)
def _runner_source() -> str:
    return RUNNER_PATH.read_text(encoding="utf-8")
