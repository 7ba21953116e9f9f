"""The `code` node: runs the author's Python `main(inputs)` in a bubblewrap sandbox.

The sandbox (`engine.nodes.sandbox`) has its own user, PID, network, mount, IPC and UTS
namespaces, a read-only root with only the base interpreter's standard library, no
environment, and a size-capped tmpfs as its only writable place. A per-node cgroup
(`engine.nodes.cgroup`) bounds the memory, process count and CPU time of the whole tree;
rlimits in `code_runner` bound each process's CPU time and file size (and, without a cgroup,
its address space and the process count). Everything is
killed when the node ends, times out, or its worker dies. Without a usable `bwrap` the node
fails closed, unless the operator set `RELAYFLOW_CODE_SANDBOX=none` (single-tenant only).
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, ClassVar, Literal

from pydantic import Field

from engine.errors import NodeError, NodeTimeout, PermanentNodeError, SandboxUnavailable
from engine.nodes.base import NodeConfig, NodeContext, NodeType
from engine.nodes.cgroup import NodeCgroup, open_node_cgroup
from engine.nodes.sandbox import (
    SANDBOX_PACKAGES,
    SandboxSpec,
    bwrap_argv,
    probe_interpreter,
    resolve_bwrap,
    warn_no_cgroup,
    warn_unsandboxed,
)
from engine.settings import Settings

CHILD_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
MAX_REPORT_BYTES = 64 * 1024 * 1024
STDERR_TAIL_BYTES = 8 * 1024
JOIN_S = 5.0
STOP_EARLY_POLL_S = 0.1
MB = 1024 * 1024
RUNNER_PATH = Path(__file__).with_name("code_runner.py")
# bwrap outside and its init inside the PID namespace also count against pids.max.
SANDBOX_HELPER_PIDS = 2
# Joins the node's cgroups, then becomes bwrap: every process of the sandbox starts inside them.
JOIN_CGROUPS = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
SANDBOX_FAILED = ("bwrap: ", "relayflow-sandbox: ")


class CodeConfig(NodeConfig):
    """Config of a `code` node."""

    code: str
    language: Literal["python"] = "python"
    memory_mb: int | None = Field(default=None, ge=32, le=65536)


def memory_cap_errors(configs: Mapping[str, NodeConfig], cap_mb: int) -> list[dict[str, Any]]:
    """Definition errors for code nodes (node id -> config) asking for more memory than the cap.

    Checked when a workflow is saved (a 422 naming the node and field); at run time the
    value is clamped instead, so lowering the cap never breaks a workflow saved before.
    """
    return [{"node_id": node_id, "field": "config.memory_mb",
             "message": f"memory_mb {config.memory_mb} is above this server's cap of {cap_mb} MB "
                        "(RELAYFLOW_CODE_MEMORY_MAX_MB)"}
            for node_id, config in configs.items()
            if isinstance(config, CodeConfig) and config.memory_mb is not None and config.memory_mb > cap_mb]


@dataclass(frozen=True)
class _Limits:
    memory_mb: int
    cpu_s: int
    file_bytes: int
    pids: int


class CodeNode(NodeType[CodeConfig]):
    """Runs `code`, which defines `def main(inputs: dict) -> dict` (or `async def main`)."""

    type_name = "code"
    Config = CodeConfig
    # Source code is neither rendered nor scanned: `{{` may be legitimate Python.
    opaque_fields: ClassVar[frozenset[str]] = frozenset({"code"})

    def run(self, ctx: NodeContext, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run the code in a sandboxed child process and return what `main` returned."""
        try:
            payload = json.dumps({"code": self.config.code, "inputs": inputs}, ensure_ascii=True).encode("ascii")
        except (TypeError, ValueError) as exc:
            raise PermanentNodeError(f"code: the node's inputs are not JSON-serialisable: {exc}") from exc
        settings = ctx.settings
        limits = _Limits(
            # Clamped again here: the cap may have been lowered since the workflow was saved.
            memory_mb=min(self.config.memory_mb or settings.code_memory_mb, settings.code_memory_max_mb),
            cpu_s=settings.code_cpu_s, file_bytes=settings.code_file_mb * MB, pids=settings.code_pids_max)
        timeout_s = ctx.remaining_s()
        if timeout_s <= 0:
            raise NodeTimeout("code: no time left in the node's timeout to start the code")
        try:
            if settings.code_sandbox == "none":
                child, cgroup_events = _run_unsandboxed(settings, limits, payload, timeout_s), (0, 0, 0.0)
            else:
                child, cgroup_events = _run_sandboxed(settings, limits, payload, timeout_s)
        except SandboxUnavailable as exc:
            raise SandboxUnavailable(f"code node {ctx.node_id!r}: {exc.message}") from exc
        oom_kills, forks_refused, cpu_used_s = cgroup_events
        # A fork bomb also runs out of memory: the refused fork is the cause, so it is named first.
        if forks_refused:
            raise PermanentNodeError(f"code: process limit exceeded ({limits.pids} processes, "
                                     "RELAYFLOW_CODE_PIDS_MAX); the code tried to start more")
        if oom_kills:
            raise _memory_error(limits.memory_mb, settings, tree=True)
        if cpu_used_s > limits.cpu_s:
            raise PermanentNodeError(f"code: CPU time limit exceeded ({limits.cpu_s} s), RELAYFLOW_CODE_CPU_S; the "
                                     f"code's processes together used {cpu_used_s:.3g} s and were stopped")
        if child.timed_out:
            raise NodeTimeout(f"code: did not finish within {timeout_s:.3g}s; its processes were killed")
        return _outputs(child, limits, settings)


def _run_sandboxed(settings: Settings, limits: _Limits, payload: bytes,
                   timeout_s: float) -> tuple[_Child, tuple[int, int, float]]:
    """Run the runner under bwrap inside a fresh per-node cgroup (or rlimits where there is none)."""
    bwrap = resolve_bwrap(settings.code_bwrap)
    interpreter = probe_interpreter(settings.code_python or sys.executable)
    packages = settings.code_packages_dir
    spec = SandboxSpec(tmpfs_bytes=settings.code_tmpfs_mb * MB, runner_path=RUNNER_PATH, packages_dir=packages)
    cgroup: NodeCgroup | None = None
    if settings.code_cgroup:
        cgroup = open_node_cgroup(limits.memory_mb * MB, limits.pids + SANDBOX_HELPER_PIDS)
        if cgroup is None:
            warn_no_cgroup()
    # With a cgroup, it bounds the tree's real memory and process count; without one, the
    # per-process RLIMIT_AS and RLIMIT_NPROC are the (weaker) bounds: see docs/configuration.md.
    argv = bwrap_argv(bwrap, interpreter, spec) + [
        "0" if cgroup else str(limits.memory_mb), str(limits.cpu_s), str(limits.file_bytes),
        "0" if cgroup else str(limits.pids),
    ] + ([SANDBOX_PACKAGES] if packages is not None else [])
    if cgroup is not None:
        argv = ["/bin/sh", "-c", JOIN_CGROUPS, "relayflow-sandbox", str(len(cgroup.procs_files)),
                *cgroup.procs_files, *argv]
    try:
        child = _run_child(argv, "/", payload, timeout_s, stop_early=_over_limit(cgroup, limits) if cgroup else None)
        events = (cgroup.memory_oom_kills(), cgroup.pids_refused(), cgroup.cpu_used_s()) if cgroup else (0, 0, 0.0)
    finally:
        if cgroup is not None:
            cgroup.kill_and_remove()
    if not child.report and not child.timed_out:
        failure = [line for line in child.stderr_tail.splitlines() if line.startswith(SANDBOX_FAILED)]
        if failure or child.returncode == 125:
            detail = failure[-1] if failure else f"exit status {child.returncode}"
            raise SandboxUnavailable(f"the code sandbox did not start ({detail}); check that user "
                                     "namespaces are enabled, or point RELAYFLOW_CODE_BWRAP at a working bwrap")
    return child, events


def _over_limit(cgroup: NodeCgroup, limits: _Limits) -> Callable[[], bool]:
    """True once the tree must be stopped: cgroup v1 OOM-kills only one process of it, and
    RLIMIT_CPU counts each process alone."""
    return lambda: cgroup.memory_oom_kills() > 0 or cgroup.cpu_used_s() > limits.cpu_s


def _run_unsandboxed(settings: Settings, limits: _Limits, payload: bytes, timeout_s: float) -> _Child:
    """The operator's explicit opt-out: a plain child process with rlimits, as the worker's user."""
    warn_unsandboxed()
    python = settings.code_python or sys.executable
    with tempfile.TemporaryDirectory(prefix="relayflow-code-", ignore_cleanup_errors=True) as tmp:
        # The runner is copied next to (not into) the working directory: an interpreter
        # without -P would put the runner's folder on sys.path, and ours holds `http.py`.
        runner = Path(tmp, "runner.py")
        runner.write_text(_runner_source(), encoding="utf-8")
        workdir = Path(tmp, "work")
        workdir.mkdir()
        argv = [python, "-I", "-X", "utf8", str(runner), str(limits.memory_mb), str(limits.cpu_s),
                str(limits.file_bytes), "0"]
        return _run_child(argv, str(workdir), payload, timeout_s)


def sandbox_problem(settings: Settings) -> str | None:
    """Run a trivial code node as a worker would; the reason code nodes will fail, or None."""
    node = CodeNode(CodeConfig(code="def main(inputs):\n    return {'ok': True}\n"))
    ctx = NodeContext(run_id="self-check", node_id="self-check", attempt=1, timeout_s=60.0, settings=settings)
    try:
        node.run(ctx, {})
    except NodeError as exc:
        return exc.message
    return None


def _memory_error(memory_mb: int, settings: Settings, tree: bool = False) -> PermanentNodeError:
    scope = " by the code's processes together" if tree else ""
    return PermanentNodeError(f"code: memory limit exceeded ({memory_mb} MB){scope}; set memory_mb higher "
                              f"(at most {settings.code_memory_max_mb} MB, RELAYFLOW_CODE_MEMORY_MAX_MB)")


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


def _run_child(argv: list[str], cwd: str, payload: bytes, timeout_s: float,
               stop_early: Callable[[], int] | None = None) -> _Child:
    """Start the runner, feed it, wait at most `timeout_s` (or until `stop_early()` is truthy),
    and always kill its process group."""
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
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            step = deadline - time.monotonic()
            if stop_early is not None:
                step = min(step, STOP_EARLY_POLL_S)
            try:
                proc.wait(timeout=max(step, 0.0))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    timed_out = True
                    break
                if stop_early is not None and stop_early():
                    break
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


def _outputs(child: _Child, limits: _Limits, settings: Settings) -> dict[str, Any]:
    """Turn the child's report (or its absence) into outputs or the right error."""
    if child.report_truncated:
        raise PermanentNodeError(f"code: outputs exceed {MAX_REPORT_BYTES // MB} MB")
    if not child.report:
        if "MemoryError" in child.stderr_tail or "Cannot allocate memory" in child.stderr_tail:
            raise _memory_error(limits.memory_mb, settings)
        raise NodeError(
            f"code: the process exited with status {child.returncode} without a result"
            + (f":\n{_tail(child.stderr_tail)}" if child.stderr_tail.strip() else ""),
            retryable=True,
        )
    try:
        report = json.loads(child.report)
    except ValueError as exc:
        raise NodeError(f"code: the runner's report is malformed: {exc}", retryable=True) from exc
    if report["ok"]:
        if b"\\u0000" in child.report and _holds_nul(report["outputs"]):
            # PostgreSQL's jsonb cannot hold NUL: refused here, or committing the node fails forever.
            raise PermanentNodeError("code: the outputs contain a NUL character (\\u0000), which cannot be stored")
        return dict(report["outputs"])
    kind, message = report["kind"], report["message"]
    if kind == "memory":
        raise _memory_error(limits.memory_mb, settings)
    if kind == "cpu":
        raise PermanentNodeError(f"code: {message}, RELAYFLOW_CODE_CPU_S; the process was stopped")
    if kind == "exception" and message.startswith(f"[Errno {errno.EFBIG}]"):
        raise PermanentNodeError(f"code: file size limit exceeded ({limits.file_bytes // MB} MB per file, "
                                 f"RELAYFLOW_CODE_FILE_MB): {message}")
    if kind == "exception":
        raise NodeError(
            f"code: {report['type']}: {message}" + (f"\n{report['traceback']}" if report["traceback"] else ""),
            retryable=True, error_type=report["type"],
        )
    prefixes = {"syntax": "code: syntax error: ", "no_main": "code: ", "not_dict": "code: ", "not_json": "code: "}
    raise PermanentNodeError(prefixes.get(kind, "code: ") + message)


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@lru_cache(maxsize=1)
def _runner_source() -> str:
    return RUNNER_PATH.read_text(encoding="utf-8")
