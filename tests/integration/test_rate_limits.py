"""Per-workspace rate limits answer RESOURCE_EXHAUSTED with RetryInfo (a server with tight limits)."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from paylink.v1 import common_pb2 as c
from paylink.v1 import link_pb2

from service import auth, runtime
from service.config import Settings
from tests.harness import Client


async def test_login_attempts_and_token_creation_are_limited(settings: Settings) -> None:
    tight = settings.model_copy(update={"rate_logins_per_minute": 6.0, "rate_link_tokens_per_minute": 12.0})
    running = await runtime.start(tight, worker=False, relay=False, run_migrations=False)
    try:
        assert running.api is not None
        _, secret = await auth.create_workspace(running.deps.pool, "limited")
        _, other_secret = await auth.create_workspace(running.deps.pool, "neighbour")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.api.port}") as channel:
            client, neighbour = Client(channel, secret), Client(channel, other_secret)
            token = await client.token([c.JOB_NAME_IDENTITY])
            session = await client.link.StartSession(
                link_pb2.StartSessionRequest(token=token.token), metadata=client.md()
            )
            wrong = link_pb2.SubmitCredentialsRequest(
                session_id=session.id, platform_id="sandbox_adp", username="user_good", password="wrong"
            )
            # burst = rate/6 = 1 attempt, then refills at one per 10 s
            await client.link.SubmitCredentials(wrong, metadata=client.md())
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.link.SubmitCredentials(wrong, metadata=client.md())
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            status = rpc_status.from_call(info.value)
            assert status is not None
            retry = error_details_pb2.RetryInfo()
            assert any(d.Unpack(retry) for d in status.details)
            assert retry.retry_delay.seconds >= 1
            # Token creation: burst 2 (12/min); the third is refused, another workspace is not affected.
            await client.token([c.JOB_NAME_IDENTITY])
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.token([c.JOB_NAME_IDENTITY])
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (await neighbour.token([c.JOB_NAME_IDENTITY])).id
    finally:
        await running.stop()
