"""Where a node's time goes under load: Relayflow's workers (or the naive chain's) kept busy, then
sampled by py-spy (the worker thread holding the GIL, by part of the hot path) and, where `perf`
works, the whole machine (Python, PostgreSQL, Redis, idle; PostgreSQL by phase).

    python bench/profile_load.py [--system relayflow|naive] [--seconds 20] [--in-flight 300] [--no-samplers]

It uses `bench/run_all.py`'s setup (its own database, `BENCH_DB_NAME`_profile, Redis database
`BENCH_REDIS_DB`, `dramatiq workers --processes 2 --threads 8`, the same 10-node template
chain), keeps `--in-flight` runs going, waits `--settle-s`, then samples for `--seconds`.
Both samplers are optional: without py-spy (`pip install py-spy`) or a working `perf` the part
is reported as skipped. The shares are of samples, so they read the same on a faster machine;
the CPU per node beside them is from /proc. Writes bench/results/profile_<system>_<time>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    DB_NAME,
    REDIS_DB,
    WARM_MARKER,
    WorkerGroup,
    _with_path,
    drop_database,
    flush_redis,
    fresh_database,
    libpq_url,
    server_process_groups,
    worker_env,
)

RESULTS = Path(__file__).resolve().parent / "results"

# A worker's GIL samples by part, the first part any frame of a stack names (most specific first)
WORKER_PARTS = (
    ("log lines", ("Logger._log",)),
    ("node statements (psycopg, pool)", ("execute_one", "LifecycleStore.", "UnclaimedStore.")),
    ("sending successors (Redis)", ("DramatiqDispatcher.send",)),
    ("executing the node (templates)", ("Executor._attempt",)),
    ("wake-ups for followers (Redis pub/sub)", ("RedisNotifier.",)),
    ("the naive step's transaction (SQLAlchemy)", ("naive_step",)),
    ("executor, other (telemetry, metrics, bookkeeping)", ("Executor.run_node",)),
    ("Dramatiq consumer thread (fetch, ack)", ("ConsumerThread.",)),
    ("Dramatiq worker thread (around the actor)", ("WorkerThread.",)),
)
# PostgreSQL's samples (perf, call graphs) by phase: the share of its samples whose stack holds the symbol
PG_PHASES = (
    ("executor start (plan state built per execution)", "standard_ExecutorStart"),
    ("executor run", "standard_ExecutorRun"),
    ("executor finish (after-row triggers: foreign keys)", "standard_ExecutorFinish"),
    ("commit (WAL flush)", "CommitTransactionCommand"),
    ("sending results (socket)", "__sys_sendto"),
    ("reading requests (socket)", "__sys_recvfrom"),
)


class Load:
    """Keeps `in_flight` runs (or chains) going on a worker group until stopped."""

    def __init__(self, system: str, url: str, redis_url: str, queue: str, in_flight: int) -> None:
        self.system, self.in_flight, self.done = system, in_flight, 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        if system == "relayflow":
            from bench.relayflow_bench import RelayflowDriver

            self.rf = RelayflowDriver(url, redis_url, queue)
            self.workflow = self.rf.workflow(10)
        else:
            from bench.comparator_bench import COMPARATORS, ChainDriver

            self.chain = ChainDriver(redis_url, queue, COMPARATORS["naive_chain"][1])

    def close(self) -> None:
        (self.rf if self.system == "relayflow" else self.chain).close()

    def run(self, group: WorkerGroup) -> None:
        """Batches of a tenth of `in_flight`, each waited for, so about `in_flight` are always going."""
        batch = max(1, self.in_flight // 10)
        try:
            if self.system == "relayflow":
                pending: list[list[str]] = []
                while not self.stop.is_set():
                    pending.append(self.rf.submit(self.workflow, batch))
                    if len(pending) >= 10:
                        self.rf.wait(pending.pop(0), group, 120.0)
                        self.done += batch * 10
            else:
                self.chain._reset()
                started = 0
                while not self.stop.is_set():
                    for i in range(batch):
                        self.chain._start(started + i)
                    started += batch
                    self.chain._wait(max(0, started - self.in_flight), group, 120.0)
                    self.done = int(self.chain.redis.get(f"{self.chain.queue}:done") or 0) * 10
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def pyspy_parts(raw: Path) -> dict[str, Any]:
    """Shares of a py-spy `--gil` raw profile by `WORKER_PARTS`, and its top leaf functions."""
    parts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        leaves[re.sub(r" \(.*", "", frames[-1])] += n
        parts[next((name for name, marks in WORKER_PARTS if any(m in f for f in frames for m in marks)),
                   "other threads")] += n
    if not total:
        return {"skipped": "no samples"}
    return {"samples": total,
            "parts_pct": {k: round(100 * v / total, 1) for k, v in parts.most_common()},
            "top_leaves_pct": {k: round(100 * v / total, 1) for k, v in leaves.most_common(12)}}


def _perf_table(data: Path, *args: str) -> list[tuple[float, str]]:
    out = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "-g", "none", *args],
                         capture_output=True, text=True, timeout=300).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(?:[\d.]+%\s+)?(?:\[.\]\s+)?(.+?)\s*$", line)
        if m and not line.lstrip().startswith("#"):
            rows.append((float(m.group(1)), m.group(2)))
    return rows


def perf_parts(data: Path) -> dict[str, Any]:
    """The machine's samples by command, and PostgreSQL's by `PG_PHASES` (share of its own samples)."""
    by_comm = _perf_table(data, "--no-children", "--sort", "comm")
    if not by_comm:
        return {"skipped": "perf recorded nothing readable"}
    pg_total = sum(pct for pct, comm in by_comm if comm == "postgres") or 1.0
    pg_syms = {sym: pct for pct, sym in _perf_table(data, "--children", "--comm", "postgres", "--sort", "sym")}
    return {"machine_pct_by_command": {comm: round(pct, 1) for pct, comm in by_comm[:8]},
            "postgres_pct_by_phase": {name: round(100 * pg_syms.get(sym, 0.0) / pg_total, 1)
                                      for name, sym in PG_PHASES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--system", choices=("relayflow", "naive"), default="relayflow")
    parser.add_argument("--seconds", type=float, default=20.0, help="sampling time")
    parser.add_argument("--settle-s", type=float, default=10.0, help="load before sampling starts")
    parser.add_argument("--in-flight", type=int, default=300)
    parser.add_argument("--no-samplers", action="store_true", help="only the rate and CPU per node (A/B runs)")
    args = parser.parse_args()
    if args.seconds <= 0 or args.in_flight < 10:
        parser.error("--seconds must be positive and --in-flight at least 10")

    pg = libpq_url(os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres")
    import bench.harness as harness
    harness.DB_NAME = f"{DB_NAME}_profile"  # fresh_database/drop_database use the module's name
    admin, url = _with_path(pg, "postgres"), _with_path(pg, harness.DB_NAME)
    redis_url = _with_path(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0", str(REDIS_DB))
    fresh_database(admin, url)
    flush_redis(redis_url)
    queue = f"bench_profile_{uuid.uuid4().hex[:6]}"
    log_dir = Path(tempfile.mkdtemp(prefix="relayflow-profile-"))
    env = worker_env(url, redis_url, queue, 10)
    module, marker = (("workers", WARM_MARKER) if args.system == "relayflow"
                      else ("bench.comparators.naive_chain", b"is ready for action"))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out: dict[str, Any] = {"system": args.system, "seconds": args.seconds, "in_flight": args.in_flight}
    load = Load(args.system, url, redis_url, queue, args.in_flight)
    try:
        with WorkerGroup(args.system, module, env, log_dir, ready_marker=marker, ready_timeout_s=180.0) as group:
            from bench.counting import CpuMeter

            meter = CpuMeter({"workers": group.pids, **server_process_groups(url, redis_url)})
            driver = threading.Thread(target=load.run, args=(group,), daemon=True)
            driver.start()
            time.sleep(args.settle_s)
            before, done0 = meter.snapshot(), load.done
            samplers = {} if args.no_samplers else _start_samplers(group, log_dir, args.seconds)
            time.sleep(args.seconds)
            for proc in samplers.values():
                proc.wait(timeout=120)
            after, done1 = meter.snapshot(), load.done
            load.stop.set()
            driver.join(timeout=180)
            if load.error is not None:
                raise load.error
            cpu = meter.delta(before, after)
            nodes = max(1, done1 - done0)
            out["nodes_per_s"] = round(nodes / cpu["wall_s"], 1)
            out["cpu_ms_per_node"] = {k: round(1000 * v / nodes, 3) for k, v in cpu.items()
                                      if k not in ("machine_busy_pct", "wall_s")}
            out["machine_busy_pct"] = cpu["machine_busy_pct"]
            raw, perf_data = log_dir / "pyspy.txt", log_dir / "perf.data"
            if not args.no_samplers:
                out["worker_gil"] = (pyspy_parts(raw) if "pyspy" in samplers and raw.exists()
                                     else {"skipped": "py-spy not found"})
                out["machine"] = (perf_parts(perf_data) if "perf" in samplers and perf_data.exists()
                                  else {"skipped": "perf not usable"})
    finally:
        load.close()
        drop_database(admin)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"profile_{args.system}_{stamp}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    print(f"results: {path.relative_to(RESULTS.parent.parent)}")


def _start_samplers(group: WorkerGroup, log_dir: Path, seconds: float) -> dict[str, subprocess.Popen[bytes]]:
    """py-spy on the newest worker process (GIL holder only), and perf on the whole machine."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    if shutil.which("py-spy"):
        worker = max(group.pids() - {group.proc.pid})
        procs["pyspy"] = subprocess.Popen(
            ["py-spy", "record", "-p", str(worker), "-d", str(int(seconds)), "-r", "200", "-f", "raw", "--gil",
             "--nonblocking", "-o", str(log_dir / "pyspy.txt")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if shutil.which("perf") and subprocess.run(["perf", "stat", "-e", "task-clock", "true"],
                                               capture_output=True).returncode == 0:
        procs["perf"] = subprocess.Popen(
            ["perf", "record", "-a", "-g", "-F", "499", "-o", str(log_dir / "perf.data"), "--", "sleep", str(seconds)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return procs


if __name__ == "__main__":
    main()
