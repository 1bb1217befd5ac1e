"""The Sizing table of docs/deployment.md, written from bench/results.json (`make bench`), so that the
figures operators size a fleet with are the last measured ones, never hand-copied.

`python bench/report.py` rewrites it with BENCHMARKS.md; only the part between the two markers
changes. Each rule of thumb is derived from the figure beside it by the arithmetic it states.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

BEGIN = "<!-- sizing:begin (written by bench/report.py from bench/results.json) -->"
END = "<!-- sizing:end -->"

# The paylink RPCs of the RPC table (bench/run.py), the simple ones and the list.
SIMPLE_RPCS = ("CreateLinkToken", "GetAccount", "GetIdentity")
LIST_RPC = "ListJobs"


def _rpc(r: dict[str, Any], name: str, concurrency: int) -> dict[str, Any] | None:
    return next((x for x in r.get("rpcs", []) if x["rpc"] == name and x["concurrency"] == concurrency), None)


def _cpu_ms(saturated: dict[str, Any], prefix: str) -> float:
    """CPU milliseconds per job of the processes whose label starts with `prefix` (every paylink
    process of a deployment together)."""
    return float(sum(v for k, v in saturated.get("cpu_ms_per_job", {}).items() if k.startswith(prefix)))


def _cores(saturated: dict[str, Any], prefix: str) -> float:
    return float(sum(v for k, v in saturated.get("cpu_cores_used", {}).items() if k.startswith(prefix)))


def headroom_rps(rps: float) -> int:
    """Half a process's measured capacity, rounded down to a hundred: the peak to plan one for."""
    return max(100, int(rps / 2 // 100 * 100))


def memory_budget_mb(peak_mb: float) -> int:
    """1.5 x the measured peak, rounded up to 32 MB."""
    return int(math.ceil(peak_mb * 1.5 / 32) * 32)


def table(r: dict[str, Any]) -> list[str]:
    """The table's lines; a part with no figure in `r` is left out."""
    rows: list[str] = []
    simple = [x for x in (_rpc(r, n, 64) for n in SIMPLE_RPCS) if x]
    listing = _rpc(r, LIST_RPC, 64)
    at16 = [x for x in (_rpc(r, n, 16) for n in (*SIMPLE_RPCS, LIST_RPC)) if x]
    if simple:
        low, high = min(x["rps"] for x in simple), max(x["rps"] for x in simple)
        measured = (
            f"One process (a single Python event loop, about one core at most) served {low:,.0f}-{high:,.0f}"
            f" simple RPCs/s at c=64 ({', '.join(SIMPLE_RPCS)})"
        )
        if listing:
            measured += f" and {listing['rps']:,.0f}/s for {LIST_RPC}"
        if at16:
            measured += f". p99 at c=16 ≤ {max(x['p99_ms'] for x in at16):.1f} ms"
        rule = (
            f"One api process per ~{headroom_rps(low):,} RPCs/s at peak (half the slowest measured"
            " capacity, the rest as headroom). At least 2."
        )
        rows.append(f"| api | {measured}. | {rule} |")
    single = (r.get("pipeline") or {}).get("saturated")
    split = (r.get("pipeline_split") or {}).get("saturated")
    if single:
        paylink, pg, kafka = (_cpu_ms(single, p) for p in ("paylink", "PostgreSQL", "Kafka"))
        measured = f"{single['jobs_per_s']:,.0f} jobs/s end to end with one `serve` process"
        if split:
            measured += (
                f", {split['jobs_per_s']:,.0f} with the API in a process of its own (`pipeline_split`)"
            )
        measured += (
            f", on the 2 cores. CPU per job (one process): {paylink:.1f} ms in paylink (creating it, running"
            f" it, publishing its events), {pg:.1f} ms in PostgreSQL, {kafka:.1f} ms in Kafka."
        )
        per_core = int(1000 / paylink // 100 * 100) if paylink else 0
        rule = (
            f"Plan about {paylink:.1f} ms of paylink CPU and {pg:.1f} ms of PostgreSQL CPU per job, plus the"
            f" RPC reads: one paylink core for every ~{per_core:,} jobs/s. With real platforms, workers wait"
            " on I/O: `PAYLINK_WORKER_CONCURRENCY` x workers ≥ jobs/s x platform latency (s)."
        )
        rows.append(f"| worker + PostgreSQL | {measured} | {rule} |")
    relay = r.get("relay")
    if relay:
        measured = f"{relay['events_per_s']:,.0f} events/s from one relay ({relay['rows']:,} rows)."
        rule = "Its standby adds availability, not throughput."
        if single:
            times = relay["events_per_s"] / single["jobs_per_s"]
            rule = (
                f"One leading relay publishes about {times:.0f} times as many events a second as the"
                " measured pipeline finishes jobs. " + rule
            )
        rows.append(f"| relay | {measured} | {rule} |")
    footprint = r.get("footprint")
    if footprint:
        soak = footprint.get("soak") or {}
        peak = max(footprint.get("rss_peak_under_rpc_load_mb", 0.0), soak.get("rss_peak_mb", 0.0))
        measured = f"RSS peak {peak:.0f} MB per process"
        if soak:
            measured += f", {soak['growth_mb']:+.1f} MB over a {soak['seconds']} s soak"
        rows.append(f"| memory | {measured}. | {memory_budget_mb(peak)} MB per process (1.5 x the peak). |")
    if single:
        rows.append(
            f"| Kafka | {_cores(single, 'Kafka'):.2f} cores at the saturated pipeline. | Three small brokers"
            " suffice far beyond paylink's pipeline rate. Disk: events x ~1 KB x RF 3 x retention. |"
        )
    rows.append(
        "| PostgreSQL connections | `PAYLINK_DATABASE_POOL_SIZE` (8) per process, plus 1 per worker and"
        " relay (configuration, not a measurement). | 2 api + 2 worker + 2 relay = 52. |"
    )
    return [BEGIN, "| part | measured | rule of thumb |", "|---|---|---|", *rows, END]


def rewrite(doc: str, r: dict[str, Any]) -> str:
    """`doc` with the part between the markers written anew (the rest untouched)."""
    head, found, rest = doc.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise SystemExit(f"docs/deployment.md has no {BEGIN} … {END} section")
    return head + "\n".join(table(r)) + tail


def write(path: Path, r: dict[str, Any]) -> None:
    path.write_text(rewrite(path.read_text(), r))
