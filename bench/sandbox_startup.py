#!/usr/bin/env python
"""The code sandbox's start-up cost per `code` node: `python bench/sandbox_startup.py [--runs 50]`.

In-process, no servers: calls `CodeNode.run` directly with a trivial `main` (returns a dict),
`--runs` times in each mode (interleaved) after two warm-up runs: `bwrap` (the sandbox: bubblewrap
namespaces, read-only binds, tmpfs, per-node cgroup when one is writable) and `none` (the
unsandboxed runner an operator can opt into: a plain `python -I` child). Reports median, p95
and max wall time per node in ms, and the difference; the JSON goes under bench/results/.
The unsandboxed runner's interpreter also reads site-packages' `.pth` files at start-up,
which the sandbox masks: the difference is the sandbox's net cost per node, not bwrap alone;
`bwrap_alone` times `python -I -S -c pass` with and without the bwrap prefix for that.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.nodes.base import NodeContext  # noqa: E402
from engine.nodes.cgroup import hierarchies  # noqa: E402
from engine.nodes.code import RUNNER_PATH, CodeNode  # noqa: E402
from engine.nodes.sandbox import SandboxSpec, bwrap_argv, probe_interpreter, resolve_bwrap  # noqa: E402
from engine.settings import Settings  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TRIVIAL = "def main(inputs):\n    return {'n': inputs['n'] + 1}\n"
WARMUP = 2


def time_modes(modes: tuple[str, ...], runs: int) -> dict[str, list[float]]:
    """Wall-clock ms of `runs` calls of a trivial code node per mode, the modes interleaved
    (so a change in the machine's load affects them alike)."""
    node = CodeNode(CodeNode.Config.model_validate({"code": TRIVIAL}))
    settings = {mode: Settings(code_sandbox=mode) for mode in modes}
    timings: dict[str, list[float]] = {mode: [] for mode in modes}
    for index in range(WARMUP + runs):
        for mode in modes:
            ctx = NodeContext(run_id="bench", node_id="code", attempt=1, timeout_s=60.0, settings=settings[mode])
            started = time.perf_counter()
            outputs = node.run(ctx, {"n": index})
            elapsed_ms = (time.perf_counter() - started) * 1000
            assert outputs == {"n": index + 1}, outputs
            if index >= WARMUP:
                timings[mode].append(elapsed_ms)
    return timings


def time_bwrap_alone(runs: int) -> dict[str, list[float]]:
    """The namespaces and mounts alone: `python -I -S -c pass` with and without the bwrap prefix."""
    interpreter = probe_interpreter(sys.executable)
    spec = SandboxSpec(tmpfs_bytes=64 * 1024 * 1024, runner_path=RUNNER_PATH, packages_dir=None)
    prefix = bwrap_argv(resolve_bwrap(Settings().code_bwrap), interpreter, spec)
    prefix = prefix[:prefix.index("--") + 1]
    bare = [interpreter.executable, "-I", "-S", "-c", "pass"]
    timings: dict[str, list[float]] = {"bwrap": [], "bare": []}
    for index in range(WARMUP + runs):
        for name, argv in (("bwrap", prefix + bare), ("bare", bare)):
            started = time.perf_counter()
            subprocess.run(argv, check=True)
            if index >= WARMUP:
                timings[name].append((time.perf_counter() - started) * 1000)
    return timings


def summary(timings: list[float]) -> dict[str, float]:
    """Median, p95 and max of a list of ms."""
    ordered = sorted(timings)
    return {"median_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2),
            "max_ms": round(ordered[-1], 2)}


def main(argv: list[str] | None = None) -> int:
    """Measure both modes, print a table, write the JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default under bench/results/)")
    args = parser.parse_args(argv)
    timings = time_modes(("bwrap", "none"), args.runs)
    sandboxed, plain = summary(timings["bwrap"]), summary(timings["none"])
    alone = time_bwrap_alone(args.runs)
    result: dict[str, Any] = {
        "bench": "sandbox_startup",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": args.runs,
        "machine": {"python": platform.python_version(), "kernel": platform.release(),
                    "bwrap": resolve_bwrap(Settings().code_bwrap),
                    "cgroups": [f"{h.controller}:v{h.version}" for h in hierarchies()]},
        "sandboxed": sandboxed,
        "unsandboxed": plain,
        "overhead_median_ms": round(sandboxed["median_ms"] - plain["median_ms"], 2),
        "overhead_p95_ms": round(sandboxed["p95_ms"] - plain["p95_ms"], 2),
        "bwrap_alone": {"with_bwrap": summary(alone["bwrap"]), "without": summary(alone["bare"]),
                        "cost_median_ms": round(statistics.median(alone["bwrap"])
                                                - statistics.median(alone["bare"]), 2)},
    }
    out = args.out or RESULTS / f"sandbox_startup_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'mode':<12}{'median ms':>12}{'p95 ms':>10}{'max ms':>10}")
    for name, row in (("bwrap", sandboxed), ("none", plain)):
        print(f"{name:<12}{row['median_ms']:>12}{row['p95_ms']:>10}{row['max_ms']:>10}")
    print(f"bwrap alone (python -I -S -c pass): +{result['bwrap_alone']['cost_median_ms']} ms median")
    print(f"overhead: median {result['overhead_median_ms']} ms, p95 {result['overhead_p95_ms']} ms -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
