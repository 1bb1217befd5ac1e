"""`make demo`: the On Demand Updates scenario against `make run`'s server, printing every call
and every event consumed from Kafka.

1. identity link with user_good, read identity and match it against "our customer";
2. a second token with account_id for a deposit switch: no credentials asked;
3. the same with user_reauth_mfa: MFA on re-access.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import asyncpg
import grpc
from aiokafka import AIOKafkaConsumer
from google.protobuf import json_format
from google.protobuf.message import Message
from paylink.v1 import account_pb2, event_pb2, link_pb2
from paylink.v1 import common_pb2 as c

from service import auth
from service.config import Settings
from tests.harness import Client

TARGET = c.AllocationTarget(
    type=c.DEPOSIT_ACCOUNT_TYPE_CHECKING,
    routing_number="021000021",
    account_number="123456789012",
    name="Everyday Checking",
)


def show(title: str, message: Message | None = None) -> None:
    print(f"\n\033[1m> {title}\033[0m")
    if message is not None:
        print(json_format.MessageToJson(message, indent=2, preserving_proto_field_name=True))


async def events_for(settings: Settings, account_ids: set[str], until: float) -> None:
    """Prints the accounts' events in per-account sequence order (Kafka orders them per topic only)."""
    seen: dict[str, tuple[str, int, str, str]] = {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"demo-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        metadata_max_age_ms=500,
    )
    await consumer.start()
    consumer.subscribe(pattern="^" + settings.topic_prefix.replace(".", r"\.") + ".*")
    try:
        while time.monotonic() < until:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for record in records:
                    event = event_pb2.Event.FromString(record.value)
                    if event.account_id in account_ids:
                        payload = event.WhichOneof("payload")
                        detail = getattr(event, payload) if payload else None
                        outcome = ""
                        if isinstance(detail, event_pb2.JobEventPayload):
                            outcome = c.JobOutcome.Name(detail.outcome)
                        seen[event.event_id] = (event.account_id, event.sequence, record.topic, outcome)
    finally:
        await consumer.stop()
    for account_id, sequence, topic, outcome in sorted(seen.values()):
        print(f"  {account_id[:8]}  seq={sequence:<3} {topic:45} {outcome}")


async def settle(client: Client, session_id: str) -> link_pb2.LinkSession:
    return await client.wait_session(session_id, link_pb2.LINK_SESSION_STATE_COMPLETED, timeout=30)


async def main() -> int:
    settings = Settings()
    target = f"{os.environ.get('PAYLINK_DEMO_HOST', '127.0.0.1')}:{settings.grpc_port}"
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    _, secret = await auth.create_workspace(pool, "demo")
    await pool.close()
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), 5)
        except TimeoutError:
            print(f"no paylink server at {target}: start it with `make run` first", file=sys.stderr)
            return 1
        client = Client(channel, secret)
        accounts: set[str] = set()
        for username, answer in (("user_good", None), ("user_reauth_mfa", "mfa_code")):
            show(f"CreateLinkToken(required_jobs=[identity]) + Link login as {username}")
            _token, session = await client.connect(username, [c.JOB_NAME_IDENTITY])
            show("LinkSession", session)
            accounts.add(session.account_id)
            await settle(client, session.id)
            identity = await client.accounts.GetIdentity(
                account_pb2.GetIdentityRequest(account_id=session.account_id), metadata=client.md()
            )
            show("GetIdentity", identity)
            customer = {
                "full_name": identity.full_name,
                "date_of_birth": identity.date_of_birth,
                "last_four_ssn": identity.last_four_ssn,
            }
            match = all(getattr(identity, k) == v for k, v in customer.items())
            print(f"  identity matches our customer record: {match}")
            show(f"CreateLinkToken(account_id={session.account_id}, required_jobs=[direct_deposit_switch])")
            second = await client.token(
                [c.JOB_NAME_DIRECT_DEPOSIT_SWITCH],
                account_id=session.account_id,
                allocation=c.Allocation(type=c.ALLOCATION_TYPE_AMOUNT, value=25_000, targets=[TARGET]),
            )
            print(f"  bound_account_id={second.bound_account_id}  (no credentials will be asked)")
            bound = await client.link.StartSession(
                link_pb2.StartSessionRequest(token=second.token), metadata=client.md()
            )
            show("StartSession (re-access with stored credentials)", bound)
            if bound.state == link_pb2.LINK_SESSION_STATE_MFA_REQUIRED and answer:
                bound = await client.link.SubmitMfa(
                    link_pb2.SubmitMfaRequest(session_id=bound.id, answer=answer), metadata=client.md()
                )
                show("SubmitMfa", bound)
            done = await settle(client, bound.id)
            show("Session completed", done)
            allocations = await client.accounts.GetDirectDepositAllocations(
                account_pb2.GetDirectDepositAllocationsRequest(account_id=session.account_id),
                metadata=client.md(),
            )
            show("GetDirectDepositAllocations", allocations)
        show("Events consumed from Kafka")
        await events_for(settings, accounts, time.monotonic() + 6)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
