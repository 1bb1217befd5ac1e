"""The baseline: a minimal grpc.aio server with paylink's server options and one trivial unary
method (grpc.health.v1.Health/Check), so ghz measures what Python gRPC itself costs here."""

from __future__ import annotations

import asyncio
import sys

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection


async def main(port: int) -> None:
    server = grpc.aio.server(
        maximum_concurrent_rpcs=1000,
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 1024 * 1024)],
    )
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection((health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    print(f"echo serving on 127.0.0.1:{bound}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
