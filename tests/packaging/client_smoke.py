"""A consumer's script, run by tests/packaging/test_client_wheel.py in a fresh venv that holds only the
paylink-proto wheel (and what pip fetched for it). It must type-check under `mypy --strict` with the
wheel's .pyi stubs, and it calls a running paylink with the wheel's gRPC stubs.

Usage: client_smoke.py HOST:PORT API_SECRET
"""

from __future__ import annotations

import sys
import time

import grpc
from grpc_status import rpc_status
from paylink.v1 import (
    account_pb2,
    account_pb2_grpc,
    common_pb2,
    event_pb2,
    link_pb2,
    link_pb2_grpc,
    link_token_pb2,
    link_token_pb2_grpc,
)


def main(target: str, secret: str) -> None:
    md = (("x-api-secret", secret), ("api-version", "2021-07-28"))
    with grpc.insecure_channel(target) as channel:
        tokens = link_token_pb2_grpc.LinkTokenServiceStub(channel)
        link = link_pb2_grpc.LinkServiceStub(channel)
        accounts = account_pb2_grpc.AccountServiceStub(channel)
        token = tokens.CreateLinkToken(
            link_token_pb2.CreateLinkTokenRequest(
                org_name="Wheel test", end_user_id="wheel-user", required_jobs=[common_pb2.JOB_NAME_IDENTITY]
            ),
            metadata=md,
            timeout=30,
        )
        session: link_pb2.LinkSession = link.StartSession(
            link_pb2.StartSessionRequest(token=token.token), metadata=md, timeout=30
        )
        session = link.SubmitCredentials(
            link_pb2.SubmitCredentialsRequest(
                session_id=session.id, platform_id="sandbox_adp", username="user_good", password="pass_good"
            ),
            metadata=md,
            timeout=30,
        )
        deadline = time.monotonic() + 60
        while session.state != link_pb2.LINK_SESSION_STATE_COMPLETED:
            if time.monotonic() > deadline:
                raise SystemExit(f"session stuck in {link_pb2.LinkSessionState.Name(session.state)}")
            time.sleep(0.2)
            session = link.GetSession(
                link_pb2.GetSessionRequest(session_id=session.id), metadata=md, timeout=30
            )
        identity = accounts.GetIdentity(
            account_pb2.GetIdentityRequest(account_id=session.account_id), metadata=md, timeout=30
        )
        print(f"identity={identity.full_name}")
        print(f"account={session.account_id}")
        # Errors carry google.rpc details (the [status] extra brings grpc_status).
        try:
            accounts.GetAccount(
                account_pb2.GetAccountRequest(account_id="00000000-0000-4000-8000-000000000000"),
                metadata=md,
                timeout=30,
            )
        except grpc.RpcError as exc:
            assert isinstance(exc, grpc.Call)  # what the sync stubs raise is both
            status = rpc_status.from_call(exc)
            print(f"error={exc.code().name} details={len(status.details) if status else 0}")
        # The Kafka envelope decodes with the same package.
        event = event_pb2.Event(event="identity.added", account_id=session.account_id, sequence=2)
        print(f"event={event_pb2.Event.FromString(event.SerializeToString()).event}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
