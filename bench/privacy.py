"""`bench/run.py --only privacy`: what sealing personal data and auditing every read cost the reads.

GetIdentity, ListPaystubs (one page of 24 paystubs), ListShifts (one page of 24 shifts) and
DownloadDocument (one paystub PDF, one chunk) with ghz at concurrency 1 and 16, each as a ratio of
the echo server measured in the same run (the machine's noise cancels out). Run it on a commit
before a change and after it to compare; docs/privacy.md quotes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

from paylink.v1 import account_pb2, link_pb2
from paylink.v1 import common_pb2 as c

from bench.common import ghz, tool
from tests.harness import Client

CONCURRENCY = (1, 16)


JOBS = [c.JOB_NAME_IDENTITY, c.JOB_NAME_PAYSTUBS, c.JOB_NAME_SHIFTS, c.JOB_NAME_DOCUMENTS]


async def _account(client: Client) -> tuple[str, str]:
    """An hourly user's account (so it has shifts) and the id of its newest document."""
    _, session = await client.connect("user_good+privacy-bench2", JOBS)
    await client.wait_session(session.id, link_pb2.LINK_SESSION_STATE_COMPLETED, timeout=60)
    docs = await client.accounts.ListDocuments(
        account_pb2.ListDocumentsRequest(account_id=session.account_id), metadata=client.md()
    )
    return session.account_id, docs.documents[0].id


async def bench_privacy(
    args: argparse.Namespace, ports: dict[str, int], client: Client
) -> list[dict[str, Any]]:
    ghz_bin = tool("ghz")
    port, echo_port = ports["api"], ports["echo"]
    account, document = await _account(client)
    md = {"x-api-secret": client.secret, "api-version": "2021-07-28", "x-caller": "bench"}
    calls: dict[str, tuple[str, dict[str, Any]]] = {
        "GetIdentity": ("paylink.v1.AccountService.GetIdentity", {"account_id": account}),
        "ListPaystubs": ("paylink.v1.AccountService.ListPaystubs", {"account_id": account, "page_size": 24}),
        "ListShifts": ("paylink.v1.AccountService.ListShifts", {"account_id": account, "page_size": 24}),
        "DownloadDocument": (
            "paylink.v1.AccountService.DownloadDocument",
            {"account_id": account, "document_id": document, "chunk_size": 1048576},
        ),
    }
    rows: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(args.runs):
        for conc in CONCURRENCY:
            echo = await asyncio.to_thread(
                ghz, ghz_bin, echo_port, "grpc.health.v1.Health.Check", {}, {}, conc, args.seconds
            )
            for name, (call, body) in calls.items():
                result = await asyncio.to_thread(ghz, ghz_bin, port, call, body, md, conc, args.seconds)
                result["ratio"] = result["rps"] / echo["rps"] if echo["rps"] else 0.0
                rows.setdefault((name, conc), []).append(result)
                print(
                    f"privacy c={conc:<3} {name:16} {result['rps']:8.0f} rps  p50 {result['p50_ms']:6.2f} ms"
                    f"  p99 {result['p99_ms']:6.2f} ms  {result['ratio']:.1%} of echo {echo['rps']:.0f}",
                    flush=True,
                )
    return [
        {
            "rpc": name,
            "concurrency": conc,
            "runs": len(runs),
            **{k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms", "ratio")},
            "errors": sum(r["errors"] for r in runs),
        }
        for (name, conc), runs in rows.items()
    ]
