"""Child-process side of the `code` node; runs under `python -I` with the standard library only.

Usage: `python -I -X utf8 code_runner.py MEMORY_MB`, with `{"code": str, "inputs": dict}` as
JSON on stdin. Writes one JSON report on the *original* stdout; everything the user's code
prints (even with `os.write(1, ...)`) goes to stderr, so it cannot corrupt the report.
Report: `{"ok": true, "outputs": {...}}` or `{"ok": false, "kind": ..., "message": ...}` with
kind one of syntax, no_main, not_dict, not_json, memory, exception.
"""
from __future__ import annotations

import inspect
import json
import linecache
import os
import resource
import sys
import traceback
from typing import Any

FILENAME = "<code>"
TRACEBACK_LINES = 12


def main() -> None:
    """Limit memory, read the request, run the user's `main`, write the report."""
    # Limiting ourselves here rather than in the parent's preexec_fn: preexec_fn may deadlock
    # in a threaded parent (a worker), and no user code runs before this line anyway.
    limit_bytes = int(sys.argv[1]) * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit_bytes = min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    sys.stdin = open(os.devnull, encoding="utf-8")
    report = execute(request["code"], request["inputs"])
    sys.stderr.flush()
    channel.write(json.dumps(report, ensure_ascii=True).encode("ascii"))
    channel.close()


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
