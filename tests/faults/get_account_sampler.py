"""Calls GetAccount in a loop and prints each call's start (seconds after "go") and latency (ms)
as JSON: a process of its own, so
what it measures is the server's answer time, not the scheduling of a busy test process.

    python tests/faults/get_account_sampler.py ADDR SECRET ACCOUNT_ID SECONDS

Prints "ready" once warm (channel, auth cache), then samples for SECONDS, then prints the JSON list.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import grpc
from paylink.v1 import account_pb2, account_pb2_grpc


async def main(addr: str, secret: str, account_id: str, seconds: float) -> None:
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = account_pb2_grpc.AccountServiceStub(channel)
        request = account_pb2.GetAccountRequest(account_id=account_id)
        md = [("x-api-secret", secret)]
        for _ in range(30):
            await stub.GetAccount(request, metadata=md)
        print("ready", flush=True)
        sys.stdin.readline()  # go
        samples = []  # (seconds after "go", milliseconds)
        go = time.perf_counter()
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            started = time.perf_counter()
            await stub.GetAccount(request, metadata=md)
            samples.append((started - go, (time.perf_counter() - started) * 1000))
            await asyncio.sleep(0.01)
        print(json.dumps(samples), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
