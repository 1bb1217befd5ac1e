"""No API secret reaches a real server's log output (issue #11, finding 2): a request whose
`x-api-secret` is valid but for one trailing byte that is not UTF-8 made grpc log the raw value at
ERROR before authentication. Sent with a raw HTTP/2 client (grpcio's refuses such metadata) to a
`python -m service api` subprocess; its whole stderr is read."""

from __future__ import annotations

import asyncio
import base64
import json
import pathlib
import uuid

from paylink.v1 import job_pb2

from service import auth, ids, runtime
from service.config import Settings
from tests import rawgrpc
from tests.cli.util import free_port, service_env, serving

UNAUTHENTICATED = 16


def _forms(secret: str) -> list[str]:
    """The secret and what is left of it after the public key id, in the forms a log could hold."""
    rest = secret.split("_", 2)[2]
    raw = secret.encode()
    return [
        secret,
        rest,
        rest[:12],
        base64.b64encode(raw).decode()[:24],
        base64.urlsafe_b64encode(raw).decode()[:24],
        raw.hex()[:24],
    ]


async def test_invalid_utf8_metadata_never_logs_the_secret(
    app: runtime.Running, settings: Settings, tmp_path: pathlib.Path
) -> None:
    _, secret = await auth.create_workspace(app.deps.pool, f"logs-{uuid.uuid4().hex[:6]}")
    key_id = ids.key_id_of_secret(secret)
    port = free_port()
    env = service_env(settings, PAYLINK_GRPC_PORT=str(port), PAYLINK_LOG_LEVEL="DEBUG")
    request = job_pb2.GetJobRequest(job_id=str(uuid.uuid4())).SerializeToString()
    async with serving("api", env, tmp_path) as server:
        for metadata in (
            [(b"x-api-secret", secret.encode() + b"\xc3")],
            [(b"x-api-secret", secret.encode()), (b"api-version", b"2021-07-28\xc3" + secret.encode())],
            [(b"x-api-secret", b"\xff" + secret.encode()), (b"x-request-id", secret.encode() + b"\xe2\x82")],
        ):
            reply = await asyncio.to_thread(
                rawgrpc.call, "127.0.0.1", port, "/paylink.v1.JobService/GetJob", request, metadata
            )
            assert reply.status in (UNAUTHENTICATED, 3), reply  # 3: INVALID_ARGUMENT (api-version)
            assert secret not in reply.message
    log = server.stderr_path.read_text(errors="replace")
    assert "Invalid encoding" not in log or "value withheld" in log
    for form in _forms(secret):
        assert form not in log, (form, log[-3000:])
    assert key_id is not None
    levels = [json.loads(line)["level"] for line in log.splitlines() if line.startswith("{")]
    assert levels and "error" not in levels, log[-3000:]
    assert "Traceback" not in log
