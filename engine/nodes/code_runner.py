"""Child-process side of the `code` node; runs under `python -I` with the standard library only.

Usage: `python -I -X utf8 code_runner.py MEMORY_MB CPU_S FILE_BYTES NPROC [PACKAGES_DIR]`, with
`{"code": str, "inputs": dict}` as JSON on stdin; a limit of 0 leaves that rlimit as it is.
In the sandbox (see `engine.nodes.sandbox`) a per-node cgroup bounds the memory and process
count of the whole tree (MEMORY_MB and NPROC are then 0); CPU_S and FILE_BYTES bound each
process. Writes one JSON report on the *original* stdout; everything the user's code prints
(even with `os.write(1, ...)`) goes to stderr, so it cannot corrupt the report.
Report: `{"ok": true, "outputs": {...}}` or `{"ok": false, "kind": ..., "message": ...}` with
kind one of syntax, no_main, not_dict, not_json, memory, cpu, exception.
"""
from __future__ import annotations

import inspect
import json
import linecache
import os
import resource
import signal
import sys
import traceback
from typing import Any

FILENAME = "<code>"
TRACEBACK_LINES = 12


def main() -> None:
    """Limit memory, read the request, run the user's `main`, write the report."""
    # Limiting ourselves here rather than in the parent's preexec_fn: preexec_fn may deadlock
    # in a threaded parent (a worker), and no user code runs before this line anyway.
    memory_mb, cpu_s, file_bytes, nproc = (int(arg) for arg in sys.argv[1:5])
    _limit(resource.RLIMIT_AS, memory_mb * 1024 * 1024)
    _limit(resource.RLIMIT_CPU, cpu_s, grace=2)  # SIGXCPU at cpu_s, SIGKILL 2 s later
    _limit(resource.RLIMIT_FSIZE, file_bytes)
    _limit(resource.RLIMIT_NPROC, nproc)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core files of the code in the tmpfs
    if len(sys.argv) > 5:
        sys.path.append(sys.argv[5])  # the operator's package folder, read-only

    channel = os.fdopen(os.dup(1), "wb")
    runner_pid = os.getpid()

    def out_of_cpu(signum: int, frame: Any) -> None:
        if os.getpid() != runner_pid:
            os._exit(128 + signum)  # a child the code forked: only the runner reports
        message = f"CPU time limit exceeded ({cpu_s} s)"
        channel.write(json.dumps({"ok": False, "kind": "cpu", "message": message}).encode("ascii"))
        channel.flush()
        os._exit(0)

    signal.signal(signal.SIGXCPU, out_of_cpu)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    sys.stdin = open(os.devnull, encoding="utf-8")
    report = execute(request["code"], request["inputs"])
    sys.stderr.flush()
    if os.getpid() != runner_pid:
        os._exit(0)  # a child the code forked returned through main: only the runner reports
    channel.write(json.dumps(report, ensure_ascii=True).encode("ascii"))
    channel.close()


def _limit(which: int, value: int, grace: int = 0) -> None:
    """Lower (never raise) the soft limit to `value` and the hard one to `value + grace`; 0 keeps."""
    if value <= 0:
        return
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
        grace = min(grace, hard - value)
    resource.setrlimit(which, (value, value + grace))


def execute(code: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Run `code`'s `main(inputs)` and describe the outcome as a JSON-ready report."""
    try:
        return _execute(code, inputs)
    except MemoryError:
        return {"ok": False, "kind": "memory", "message": "MemoryError"}


def _execute(code: str, inputs: dict[str, Any]) -> dict[str, Any]:
    try:
        compiled = compile(code, FILENAME, "exec")
    except SyntaxError as exc:
        return {"ok": False, "kind": "syntax", "message": f"{exc.msg} (line {exc.lineno})"}
    # Registering the source lets tracebacks show the user's lines.
    linecache.cache[FILENAME] = (len(code), None, code.splitlines(keepends=True), FILENAME)
    namespace: dict[str, Any] = {"__name__": "__relayflow_code__"}
    try:
        exec(compiled, namespace)
        entry = namespace.get("main")
        if not callable(entry):
            return {"ok": False, "kind": "no_main", "message": "the code must define main(inputs)"}
        try:
            inspect.signature(entry).bind({})
        except TypeError:
            return {"ok": False, "kind": "no_main", "message": "main must take one argument, inputs"}
        except ValueError:
            pass  # no signature to inspect (a builtin): let the call decide
        result = entry(inputs)
        if inspect.isawaitable(result):
            import asyncio

            result = asyncio.run(_await(result))
    except MemoryError:
        raise
    except BaseException as exc:  # SystemExit too: the user's code ended abnormally
        return _describe_exception(exc)
    if not isinstance(result, dict):
        return {"ok": False, "kind": "not_dict", "message": f"main() returned {type(result).__name__}, not a dict"}
    for key, value in result.items():
        if not isinstance(key, str):
            return {"ok": False, "kind": "not_json", "message": f"output key {key!r} is not a string"}
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return {"ok": False, "kind": "not_json", "message": f"output {key!r} is not JSON-serialisable: {exc}"}
    return {"ok": True, "outputs": result}


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _describe_exception(exc: BaseException) -> dict[str, Any]:
    tb = exc.__traceback__
    # Hide the runner's own frames: the user's traceback starts at their code.
    while tb is not None and tb.tb_frame.f_code.co_filename != FILENAME:
        tb = tb.tb_next
    lines = [] if tb is None else "".join(traceback.format_exception(type(exc), exc, tb)).rstrip().splitlines()
    return {
        "ok": False,
        "kind": "exception",
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "\n".join(lines[-TRACEBACK_LINES:]),
    }


if __name__ == "__main__":
    main()
