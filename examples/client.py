"""An example paylink client configured for a fleet (docs/deployment.md): one channel over every api
process, with the published service config (examples/grpc_service_config.json: round robin,
client-side health checks, retry on UNAVAILABLE with backoff) and a request_id on each create so
that a retry never creates a second resource.

    python examples/client.py --secret sk_... --target ipv4:127.0.0.1:50051,127.0.0.1:50052
    python examples/client.py --secret sk_... --target dns:///paylink-api.internal:50051

It creates a link token and prints its id. PAYLINK_API_SECRET may replace --secret.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import sys
import uuid

import grpc

try:
    from paylink.v1 import common_pb2, link_token_pb2, link_token_pb2_grpc
except ImportError:  # run from a checkout: use the generated classes in generated/
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "generated"))
    from paylink.v1 import common_pb2, link_token_pb2, link_token_pb2_grpc

SERVICE_CONFIG = (pathlib.Path(__file__).resolve().parent / "grpc_service_config.json").read_text()

CHANNEL_OPTIONS = [
    ("grpc.service_config", SERVICE_CONFIG),  # round robin, health checks, retry policy
    ("grpc.enable_retries", 1),
    # Use a restarted api process again within a second (gRPC's default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def channel(target: str) -> grpc.aio.Channel:
    """One channel for the whole application: it balances and retries by itself."""
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default="ipv4:127.0.0.1:50051", help="every api address")
    parser.add_argument("--secret", default=os.environ.get("PAYLINK_API_SECRET", ""))
    args = parser.parse_args()
    if not args.secret:
        parser.error("--secret or PAYLINK_API_SECRET is required")
    metadata = [("x-api-secret", args.secret), ("api-version", "2021-07-28")]
    async with channel(args.target) as ch:
        tokens = link_token_pb2_grpc.LinkTokenServiceStub(ch)
        request = link_token_pb2.CreateLinkTokenRequest(
            org_name="Example Co",
            end_user_id="example-user",
            required_jobs=[common_pb2.JOB_NAME_IDENTITY],
            # Idempotency: a retry after a lost answer returns this same token.
            request_id=str(uuid.uuid4()),
        )
        try:
            token = await tokens.CreateLinkToken(request, metadata=metadata)
        except grpc.aio.AioRpcError as exc:  # retries are done: this code is final
            print(f"CreateLinkToken failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        print(f"link token {token.id}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
