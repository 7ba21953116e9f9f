#!/usr/bin/env python
"""Relayflow's benchmark, with its two comparators, in one sitting: `python bench/run_all.py [--quick]`.

Phases (docs/benchmarks.md explains the method and the figures):

1. In process (`bench/inprocess.py`): round trips, statements, Redis commands, CPU, WAL and a
   profile per node, with the engines the workers and the API build; the naive step; the scale
   check without the queue.
2. Comparator A, the bare Dramatiq chain, and 3. comparator B, the naive chain, with its
   fan-out (`bench/comparator_bench.py`, `bench/comparators/`).
4. Relayflow under `dramatiq workers --processes 2 --threads 8` (`bench/relayflow_bench.py`):
   throughput, unloaded latency, wait events, Redis commands, the 1,000-node scale check; then,
   unless `--skip-claimed`, its throughput and latency with pure nodes claimed like any other
   (`RELAYFLOW_CLAIM_PURE_NODES=true`): what the unclaimed path gains, in the same sitting.
5. The peers, if the `bench` extra is installed (`pip install -e '.[bench]'`; otherwise skipped
   with a line saying so): a Celery chain (Redis broker and result backend) and a DBOS workflow
   (Postgres), same shape (`bench/peer_bench.py`, `bench/comparators/`).
6. With `--inline` only: the same throughput and latency for the inline-successor experiment
   (`bench/experiments/inline.py`, not adopted).
7. The request path (`bench/request_path.py`, unless `--skip-api`): `bench/api_latency.py`'s limit
   comparator in its own process and database: a poll's p50 with one client and polls/s with 50
   clients, as ratios of a bare Flask route reading the same row.

The last line prints every ratio of the sitting (`ratios` in the results).

One worker group runs at a time and is killed when its phase ends. Every wait has a timeout and
`--budget-s` bounds the whole run. Setup and cleanup are in `bench/harness.py`.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.comparator_bench import run_comparator  # noqa: E402
from bench.harness import (  # noqa: E402
    DB_NAME,
    FULL,
    PROCESSES,
    QUICK,
    REDIS_DB,
    THREADS,
    BenchError,
    drop_database,
    flush_redis,
    fresh_database,
    server_facts,
    server_process_groups,
    server_urls,
)
from bench.inprocess import InProcess  # noqa: E402
from bench.peer_bench import missing_peers, run_celery, run_dbos  # noqa: E402
from bench.relayflow_bench import run_relayflow  # noqa: E402
from bench.report import print_report, write_results  # noqa: E402
from bench.request_path import run_limit_comparison  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer runs, 1 round (a smoke test, ~20 s)")
    parser.add_argument("--rounds", type=int, help="throughput rounds per system (default 3, quick 1)")
    parser.add_argument("--inline", action="store_true",
                        help="also measure the inline-successor experiment (not adopted; see bench/experiments)")
    parser.add_argument("--skip-peers", action="store_true", help="leave out the peers (Celery, DBOS)")
    parser.add_argument("--skip-api", action="store_true",
                        help="leave out the request path (bench/api_latency.py's limit comparator)")
    parser.add_argument("--skip-claimed", action="store_true",
                        help="leave out Relayflow with pure nodes claimed (RELAYFLOW_CLAIM_PURE_NODES=true)")
    parser.add_argument("--keep-db", action="store_true", help=f"keep the {DB_NAME} database afterwards")
    parser.add_argument("--budget-s", type=int, default=900,
                        help="stop (cleanly) if the whole benchmark takes longer than this (default 900)")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, res: dict[str, Any], urls: tuple[str, str, str], log_dir: Path) -> None:
    """Every phase, in order; fills `res`."""
    admin_url, bench_url, redis_url = urls
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    res["plan"] = asdict(plan)
    # the scale check's long workflow is over the default definition limit (500 nodes)
    os.environ.setdefault("RELAYFLOW_DEFINITION_MAX_NODES", str(max(500, plan.scale_nodes)))
    tag = uuid.uuid4().hex[:6]
    print(f"setting up {DB_NAME} and Redis db {REDIS_DB} (logs in {log_dir})", flush=True)
    fresh_database(admin_url, bench_url)
    res["machine"].update(server_facts(bench_url, redis_url))
    meter_groups = server_process_groups(bench_url, redis_url)

    missing = [] if args.skip_peers else missing_peers()
    peers = [] if args.skip_peers else [p for p in ("celery", "dbos") if p not in missing]
    if args.skip_peers:
        print("peers skipped (--skip-peers)", flush=True)
    elif missing:
        print(f"peers skipped: {', '.join(missing)} not installed (pip install -e '.[bench]')", flush=True)
    res["peers_skipped"] = ["celery", "dbos"] if args.skip_peers else missing
    total = 4 + len(peers) + (0 if args.skip_api else 1) + (0 if args.skip_claimed else 1)
    print(f"1/{total} in process: round trips, CPU, WAL per node; the naive step; the scale check", flush=True)
    inproc = InProcess(bench_url, redis_url, f"bench_rt_{tag}", log_dir)
    try:
        res["in_process"] = {"relayflow": inproc.relayflow(plan.rt_runs, plan.nodes),
                             "naive": inproc.naive(plan.rt_runs * plan.nodes * 2),
                             "scale": inproc.scale(10, plan.scale_small_runs * 4, plan.scale_nodes)}
    finally:
        inproc.close()
    print(f"2/{total} comparator A: bare Dramatiq chain", flush=True)
    res["bare_chain"] = run_comparator("bare_chain", plan, bench_url, redis_url, f"bench_bare_{tag}", log_dir,
                                       meter_groups, monitor=True)
    print(f"3/{total} comparator B: naive chain (one Postgres transaction per step), its fan-out", flush=True)
    res["naive_chain"] = run_comparator("naive_chain", plan, bench_url, redis_url, f"bench_naive_{tag}", log_dir,
                                        meter_groups, waits=True)
    print(f"4/{total} Relayflow: throughput, latency, wait events, Redis commands, scale", flush=True)
    res["relayflow"] = run_relayflow(plan, bench_url, redis_url, f"bench_relayflow_{tag}", log_dir, meter_groups)
    step = 4
    if not args.skip_claimed:
        step += 1
        print(f"{step}/{total} Relayflow with pure nodes claimed (RELAYFLOW_CLAIM_PURE_NODES=true): throughput, latency",
              flush=True)
        res["relayflow_claimed"] = run_relayflow(plan, bench_url, redis_url, f"bench_claimed_{tag}", log_dir,
                                                 meter_groups, variant={"RELAYFLOW_CLAIM_PURE_NODES": "true"},
                                                 name="relayflow_claimed")
    if "celery" in peers:
        step += 1
        print(f"{step}/{total} peer: Celery chain (Redis broker and result backend)", flush=True)
        res["celery"] = run_celery(plan, bench_url, redis_url, f"bench_celery_{tag}", log_dir, meter_groups)
    if "dbos" in peers:
        step += 1
        print(f"{step}/{total} peer: DBOS workflow (Postgres, a queue, 2 processes x 8 workflows)", flush=True)
        res["dbos"] = run_dbos(plan, admin_url, bench_url, redis_url, f"bench_dbos_{tag}", log_dir)
    if args.inline:
        print("experiment (not adopted): inline successor execution", flush=True)
        res["experiments"] = {"inline": run_relayflow(plan, bench_url, redis_url, f"bench_inline_{tag}", log_dir,
                                                      meter_groups, module="bench.experiments.inline")}
    if not args.skip_api:
        print(f"{total}/{total} request path: Relayflow's poll against a bare Flask route (bench/api_latency.py)",
              flush=True)
        res["request_path"] = run_limit_comparison(args.quick, log_dir)
    res["ratios"] = {
        "relayflow_over_bare": round(res["relayflow"]["per_s"] / res["bare_chain"]["per_s"], 3),
        "relayflow_over_naive": round(res["relayflow"]["per_s"] / res["naive_chain"]["per_s"], 3),
    }
    for peer in peers:
        res["ratios"][f"relayflow_over_{peer}"] = round(res["relayflow"]["per_s"] / res[peer]["per_s"], 3)
    if "request_path" in res:  # a single client's poll p50 (target <= 1.5) and 50 clients' requests/s (>= 0.6)
        res["ratios"]["poll_p50_over_limit"] = res["request_path"]["poll_p50_over_limit"]
        res["ratios"]["poll_throughput_over_limit"] = res["request_path"]["throughput_over_limit"]
    if "relayflow_claimed" in res:  # the unclaimed path of pure nodes against claiming them, same sitting
        res["ratios"]["unclaimed_over_claimed"] = round(res["relayflow"]["per_s"] / res["relayflow_claimed"]["per_s"], 3)
    rf_fan, naive_fan = res["relayflow"].get("fanout"), res["naive_chain"].get("fanout")
    if rf_fan and naive_fan:  # fan-out nodes/s, root -> width -> join, one run at a time
        res["ratios"]["relayflow_over_naive_fanout"] = round(rf_fan["nodes_per_s"] / naive_fan["nodes_per_s"], 3)


def code_fingerprint() -> str:
    """sha256 of the engine's and the workers' sources, to tell which code a result file measured."""
    digest = hashlib.sha256()
    for path in sorted([*ROOT.glob("engine/**/*.py"), *ROOT.glob("workers/**/*.py"), *ROOT.glob("migrations/**/*.py")]):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    urls = server_urls()
    log_dir = Path(tempfile.mkdtemp(prefix="relayflow-bench-"))
    started = time.monotonic()
    res: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "code_sha256": code_fingerprint(),
        "command": " ".join(["python", "bench/run_all.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_at_start": os.getloadavg()},
        "setup": {"processes": PROCESSES, "threads": THREADS, "prefetch": THREADS, "redis_db": REDIS_DB,
                  "database": DB_NAME},
    }

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    def on_alarm(_signum: int, _frame: Any) -> None:
        raise BenchError(f"time budget of {args.budget_s}s exceeded")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.budget_s)
    try:
        flush_redis(urls[2])
        measure(args, res, urls, log_dir)
        signal.alarm(0)
        res["elapsed_s"] = round(time.monotonic() - started, 1)
        res["machine"]["loadavg_at_end"] = os.getloadavg()
        path = write_results(res, args.quick)
        print_report(res)
        print(f"results: {path.relative_to(ROOT)} (elapsed {res['elapsed_s']}s)")
        shutil.rmtree(log_dir, ignore_errors=True)  # worker logs are kept only on failure
        return 0
    except BenchError as exc:
        print(f"benchmark failed: {exc} (worker logs in {log_dir})", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        try:
            flush_redis(urls[2])
        except Exception as exc:  # noqa: BLE001 - report and go on cleaning up
            print(f"could not flush Redis db {REDIS_DB}: {exc}", file=sys.stderr)
        if not args.keep_db:
            try:
                drop_database(urls[0])
            except Exception as exc:  # noqa: BLE001 - the next run drops it first
                print(f"could not drop {DB_NAME}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
