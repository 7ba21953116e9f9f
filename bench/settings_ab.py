#!/usr/bin/env python
"""Relayflow's throughput under two worker settings, interleaved: A, B, A, B, … in one sitting.

    python bench/settings_ab.py                                   # claimed vs unclaimed pure nodes, 3 cycles
    python bench/settings_ab.py --cycles 2 --b RELAYFLOW_WORKER_WARM_LLM=false

On a shared VM the same system's figure moves by up to 2× within minutes, so a comparison of
two settings is fair only when they alternate. Each cycle starts a `dramatiq workers --processes
2 --threads 8` group per setting (waiting for its LiteLLM warm-up), runs 30 warm-up runs, then
2 rounds of 200 runs × 10 `template` nodes, with CPU per node by process group. Its own database
and Redis database (`BENCH_DB_NAME`, `BENCH_REDIS_DB`, as bench/harness.py); results in
`bench/results/settings_ab_<time>.json`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.counting import CpuMeter  # noqa: E402
from bench.harness import (  # noqa: E402
    ROOT,
    WARM_MARKER,
    WorkerGroup,
    drop_database,
    flush_redis,
    fresh_database,
    server_process_groups,
    server_urls,
    worker_env,
)
from bench.relayflow_bench import RelayflowDriver  # noqa: E402

RUNS, NODES = 200, 10


def _pairs(values: list[str], option: str) -> dict[str, str]:
    """NAME=VALUE arguments as environment variables; anything else is refused, naming the option."""
    bad = [v for v in values if "=" not in v or not v.split("=", 1)[0]]
    if bad:
        raise SystemExit(f"settings_ab.py: {option} takes NAME=VALUE settings (e.g. RELAYFLOW_CLAIM_PURE_NODES=true); "
                         f"got {', '.join(repr(b) for b in bad)}")
    return dict(v.split("=", 1) for v in values)


def measure(variants: dict[str, dict[str, str]], cycles: int, rounds: int) -> dict[str, Any]:
    """Nodes/s and CPU per node of each variant, `rounds` rounds per cycle, variants alternating."""
    admin, bench_url, redis_url = server_urls()
    fresh_database(admin, bench_url)
    flush_redis(redis_url)
    log_dir = Path(tempfile.mkdtemp(prefix="relayflow-ab-"))
    groups = server_process_groups(bench_url, redis_url)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    try:
        for cycle in range(cycles):
            for name, extra in variants.items():
                queue = f"bench_ab_{uuid.uuid4().hex[:6]}"
                driver = RelayflowDriver(bench_url, redis_url, queue)
                env = worker_env(bench_url, redis_url, queue, NODES) | extra
                warm = extra.get("RELAYFLOW_WORKER_WARM_LLM", "true").lower() not in ("false", "0")
                ready = {"ready_marker": WARM_MARKER} if warm else {}
                try:
                    with WorkerGroup(f"{name}_{cycle}", "workers", env, log_dir, ready_timeout_s=180.0, **ready) as group:
                        workflow = driver.workflow(NODES)
                        driver.wait(driver.submit(workflow, 30), group, 60.0)  # warm-up
                        meter = CpuMeter({"workers": group.pids, **groups})
                        for _ in range(rounds):
                            before = meter.snapshot()
                            result = driver.throughput(workflow, RUNS, NODES, group)
                            cpu = meter.delta(before, meter.snapshot())
                            result["cpu_ms_per_node"] = {k: round(1000 * cpu[k] / (RUNS * NODES), 2)
                                                         for k in ("workers", "postgres", "redis", "driver") if k in cpu}
                            result["cycle"] = cycle
                            out[name].append(result)
                            print(f"cycle {cycle} {name}: {result['per_s']:.0f} nodes/s, CPU per node "
                                  f"{result['cpu_ms_per_node']}", flush=True)
                finally:
                    driver.close()
    finally:
        drop_database(admin)
        flush_redis(redis_url)
    return {name: {"median_per_s": statistics.median(r["per_s"] for r in rounds_), "rounds": rounds_}
            for name, rounds_ in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--a", nargs="*", default=["RELAYFLOW_CLAIM_PURE_NODES=false"],
                        help="settings of variant A, NAME=VALUE (default: the unclaimed path, as shipped)")
    parser.add_argument("--b", nargs="*", default=["RELAYFLOW_CLAIM_PURE_NODES=true"],
                        help="settings of variant B (default: pure nodes claimed)")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds per variant per cycle")
    args = parser.parse_args(argv)
    variants = {"a": _pairs(args.a, "--a"), "b": _pairs(args.b, "--b")}
    started = datetime.now(UTC)
    res = {"started_at": started.isoformat(timespec="seconds"), "variants": variants,
           "results": measure(variants, args.cycles, args.rounds)}
    a, b = res["results"]["a"]["median_per_s"], res["results"]["b"]["median_per_s"]
    res["a_over_b"] = round(a / b, 3)
    path = ROOT / "bench" / "results" / f"settings_ab_{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"A {variants['a']}: median {a:.0f} nodes/s; B {variants['b']}: median {b:.0f}; A/B {res['a_over_b']}")
    print(f"results: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
