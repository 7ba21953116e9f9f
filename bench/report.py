"""The benchmark's table (printed) and its JSON (bench/results/)."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import ROOT

RESULTS = ROOT / "bench" / "results"
CPU_GROUPS = ("workers", "postgres", "postgres_other", "redis", "driver")


def _kinds(d: dict[str, float], scale: float = 1.0, limit: int = 8) -> str:
    return ", ".join(f"{k} {round(v * scale, 2):g}" for k, v in list(d.items())[:limit])


def _rounds(r: dict[str, Any]) -> str:
    return ", ".join(f"{x['per_s']:.0f}" for x in r["rounds"])


def _cpu_row(name: str, r: dict[str, Any], units: int) -> tuple[str, str, str]:
    """CPU per node in the middle throughput round, by process group."""
    cpu = r["rounds"][len(r["rounds"]) // 2]["cpu_s"]
    total = 1000 * sum(cpu.get(k, 0.0) for k in CPU_GROUPS) / units
    parts = ", ".join(f"{k} {1000 * cpu[k] / units:.2f}" for k in CPU_GROUPS if k in cpu)
    return (f"CPU per node under load: {name}", f"{total:.2f} ms", f"{parts}; machine {cpu['machine_busy_pct']}% busy")


def table_rows(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    p, rf, bare, naive = res["plan"], res["relayflow"], res["bare_chain"], res["naive_chain"]
    ip, ratios = res["in_process"], res["ratios"]
    ex, sub, cost = ip["relayflow"]["execute"], ip["relayflow"]["submit"], ip["relayflow"]["cost"]
    nx, ncost = ip["naive"]["execute"], ip["naive"]["cost"]
    lat, sc, isc = rf["latency"], rf["scale"], ip["scale"]
    units = p["runs"] * p["nodes"]
    rows = [
        ("Relayflow throughput", f"{rf['per_s']:.0f} nodes/s",
         f"{p['runs']} runs x {p['nodes']} nodes in flight; rounds {_rounds(rf)}"),
        ("Bare Dramatiq chain (queue ceiling)", f"{bare['per_s']:.0f} msgs/s", f"rounds {_rounds(bare)}"),
        ("Naive chain (1 PG txn per step)", f"{naive['per_s']:.0f} steps/s", f"rounds {_rounds(naive)}"),
        ("Relayflow / bare", f"{ratios['relayflow_over_bare']:.2f}x", ""),
        ("Relayflow / naive", f"{ratios['relayflow_over_naive']:.2f}x", "target >= 0.8x"),
        ("Unloaded latency per node", f"{lat['per_node']['median_ms']:.1f} ms",
         f"median of {lat['per_node']['n']} runs of {p['nodes']}, one at a time"),
        ("  claim -> commit (inside the worker)", f"{lat['node_claim_to_commit']['median_ms']:.2f} ms", "median node"),
        ("  commit -> next claim (queue hop)", f"{lat['hop_commit_to_next_claim']['median_ms']:.2f} ms", "median hop"),
        ("  submit -> first claim", f"{lat['submit_to_first_claim']['median_ms']:.1f} ms", "median run"),
        ("Unloaded latency per step: bare / naive",
         f"{bare['latency_per_step']['median_ms']:.1f} / {naive['latency_per_step']['median_ms']:.1f} ms", ""),
        (f"Scale, workers: {sc['small_nodes']}-node / {sc['big_nodes']}-node run",
         f"{sc['small']['per_node']['median_ms']:.1f} / {sc['big']['per_node']['median_ms']:.1f} ms per node",
         f"claim->commit {sc['small']['node_claim_to_commit']['median_ms']:.2f} / "
         f"{sc['big']['node_claim_to_commit']['median_ms']:.2f} ms; long run first/last tenth "
         f"{sc['big_first_tenth_claim_to_commit']['median_ms']:.2f} / "
         f"{sc['big_last_tenth_claim_to_commit']['median_ms']:.2f} ms"),
        (f"Scale, in process: {isc['small']['nodes']}-node / {isc['big']['nodes']}-node run",
         f"{isc['small']['cpu_ms_per_node']:.2f} / {isc['big']['cpu_ms_per_node']:.2f} ms CPU per node",
         f"ratio {isc['ratio_cpu_per_node_big_over_small']:.2f}; wall {isc['small']['per_node']['median_ms']:.2f} / "
         f"{isc['big']['per_node']['median_ms']:.2f} ms; tenths of the long run "
         f"{min(isc['big']['tenths_median_ms']):.2f}-{max(isc['big']['tenths_median_ms']):.2f} ms; RT/node "
         f"{isc['small']['round_trips_per_node']:g} / {isc['big']['round_trips_per_node']:g}"),
        ("PG statements per node (worker, happy path)", f"{ex['statements']:.2f}", ""),
        ("PG round trips per node (worker)", f"{ex['round_trips']:.2f}", _kinds(ex["by_kind"])),
        ("PG round trips per run at submit (API engine)", f"{sub['round_trips'] * p['nodes']:.1f}",
         _kinds(sub["by_kind"], p["nodes"], 12)),
        ("Naive step: PG round trips / statements", f"{nx['round_trips']:g} / {nx['statements']:g}",
         _kinds(nx["by_kind"])),
        ("Bytes to PG per node: Relayflow / naive", f"{ex['bytes_sent']} / {nx['bytes_sent']}", ""),
        ("WAL per node: Relayflow / naive", f"{cost['wal_bytes']} / {ncost['wal_bytes']} B", "in process"),
        ("  Relayflow WAL by relation", "bytes", _kinds(cost.get("wal_bytes_by_relation", {}), limit=10)),
        ("  naive WAL by relation", "bytes", _kinds(ncost.get("wal_bytes_by_relation", {}), limit=6)),
        ("Redis commands per node (all clients)", f"{rf['redis']['commands_per_node']:.2f}",
         _kinds(rf["redis"]["by_command_per_node"])),
    ]
    if "redis" in bare:
        rows.append(("Redis commands per step, bare chain", f"{bare['redis']['commands_per_node']:.2f}",
                     _kinds(bare["redis"]["by_command_per_node"])))
    rows += [_cpu_row(name, r, units) for name, r in (("Relayflow", rf), ("naive", naive), ("bare", bare))]
    rows += peer_rows(res)
    sub_cost = ip["relayflow"]["submit_cost"]
    rows += [
        ("In process per node: Relayflow", f"{cost['python_cpu_ms'] + cost['pg_backend_cpu_ms']:.2f} ms CPU",
         f"Python {cost['python_cpu_ms']:.2f} + PG backends {cost['pg_backend_cpu_ms']:.2f}; "
         f"wall {cost['wall_ms']:.2f} ms"),
        ("In process per step: naive", f"{ncost['python_cpu_ms'] + ncost['pg_backend_cpu_ms']:.2f} ms CPU",
         f"Python {ncost['python_cpu_ms']:.2f} + PG backends {ncost['pg_backend_cpu_ms']:.2f}; "
         f"wall {ncost['wall_ms']:.2f} ms"),
        ("In process per run: submit", f"{p['nodes'] * (sub_cost['python_cpu_ms'] + sub_cost['pg_backend_cpu_ms']):.2f}"
         " ms CPU", f"Python {p['nodes'] * sub_cost['python_cpu_ms']:.2f} + PG backends "
         f"{p['nodes'] * sub_cost['pg_backend_cpu_ms']:.2f}; wall {p['nodes'] * sub_cost['wall_ms']:.2f} ms"),
        ("Node-side Python CPU by package", "%", _kinds(ip["relayflow"]["python_cpu_by_package_pct"])),
    ]
    for name, r in (("Relayflow", rf), ("naive", naive)):
        if "pg_waits" in r:
            per = r["pg_waits"]["backends_per_sample"]
            rows.append((f"PG backends during a round: {name}", f"{sum(per.values()):.1f}", _kinds(per, limit=5)))
    for name, v in res.get("experiments", {}).items():
        rows.append((f"EXPERIMENT (not adopted) {name}", f"{v['per_s']:.0f} nodes/s",
                     f"{v['per_s'] / naive['per_s']:.2f}x naive; rounds {_rounds(v)}; "
                     f"latency/node {v['latency']['per_node']['median_ms']:.1f} ms"))
    return rows


PEER_NAMES = {"celery": "Celery chain (Redis broker + result backend)", "dbos": "DBOS workflow (Postgres)"}


def peer_rows(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The peers (Celery, DBOS) and the fan-out of every system that ran one."""
    p, ratios, rows = res["plan"], res["ratios"], []
    for peer, label in PEER_NAMES.items():
        if peer not in res:
            continue
        r = res[peer]
        rows += [(label, f"{r['per_s']:.0f} nodes/s", f"rounds {_rounds(r)}"),
                 (f"Relayflow / {peer}", f"{ratios[f'relayflow_over_{peer}']:.2f}x",
                  "target >= 1.3x" if peer == "celery" else "target >= 1.8x"),
                 (f"Unloaded latency per node: {peer}", f"{r['latency_per_step']['median_ms']:.1f} ms",
                  f"median of {r['latency_per_step']['n']} runs of {p['nodes']}, one at a time"),
                 _cpu_row(peer, r, p["runs"] * p["nodes"])]
        if "wal_per_step" in r:
            rows.append((f"WAL per node: {peer}", f"{r['wal_per_step']['bytes']} B",
                         "unloaded, enqueue included; " + _kinds(r["wal_per_step"]["by_relation"], limit=6)))
        if "redis" in r:
            rows.append((f"Redis commands per node: {peer}", f"{r['redis']['commands_per_node']:.2f}",
                         _kinds(r["redis"]["by_command_per_node"])))
    claimed = res.get("relayflow_claimed")
    if claimed:
        rows += [("Relayflow, pure nodes claimed", f"{claimed['per_s']:.0f} nodes/s",
                  f"RELAYFLOW_CLAIM_PURE_NODES=true; rounds {_rounds(claimed)}"),
                 ("Unclaimed / claimed", f"{ratios['unclaimed_over_claimed']:.2f}x", "the unclaimed path's gain"),
                 _cpu_row("relayflow_claimed", claimed, p["runs"] * p["nodes"])]
    if res.get("peers_skipped"):
        rows.append(("Peers skipped", ", ".join(res["peers_skipped"]), "pip install -e '.[bench]'"))
    for key, name in (("relayflow", "relayflow"), ("naive_chain", "naive"), ("celery", "celery"), ("dbos", "dbos")):
        f = res.get(key, {}).get("fanout")
        if f:
            rows.append((f"Fan-out root -> {f['width']} -> join: {name}", f"{f['wall']['median_ms']:.0f} ms",
                         f"{f['nodes_per_s']:.0f} nodes/s; median of {f['wall']['n']} runs, one at a time"))
    if "relayflow_over_naive_fanout" in ratios:
        rows.append(("Relayflow / naive, fan-out", f"{ratios['relayflow_over_naive_fanout']:.2f}x", "nodes/s"))
    rp = res.get("request_path")
    if rp:
        rows += [("Poll p50, 1 client: Relayflow / limit", f"{rp['poll_p50_over_limit']:.2f}x",
                  f"{rp['relayflow_p50_ms']:.2f} / {rp['limit_p50_ms']:.2f} ms; target <= 1.5x"),
                 ("Polls/s, 50 clients: Relayflow / limit", f"{rp['throughput_over_limit']:.2f}x",
                  f"{rp['relayflow_requests_per_s']:.0f} / {rp['limit_requests_per_s']:.0f}; target >= 0.6x")]
    return rows


def print_report(res: dict[str, Any]) -> None:
    rows = table_rows(res)
    title = f"Relayflow benchmark ({res['mode']}, {res['machine']['cpus']} cores, {res['started_at']})"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        for row in rows:
            print(" | ".join(row))
        print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in res["ratios"].items()))
        return
    table = Table(title=title)
    for col in ("measure", "value", "note"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console(width=max(140, Console().width)).print(table)
    print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in res["ratios"].items()))


def write_results(res: dict[str, Any], quick: bool) -> Path:
    """`latest.json` (`latest-quick.json` with --quick) and a copy named by the time."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if quick else ""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    body = json.dumps(res, indent=2, default=str) + "\n"
    latest = RESULTS / f"latest{suffix}.json"
    tmp = latest.with_suffix(".json.tmp")
    tmp.write_text(body)
    tmp.replace(latest)
    (RESULTS / f"{stamp}{suffix}.json").write_text(body)
    return latest
