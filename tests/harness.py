"""Test harness: a database per test run (from a migrated template), a Kafka topic prefix per run,
an in-process server (API + worker + relay), gRPC clients, and an event collector on the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import grpc
from aiokafka import AIOKafkaConsumer

from paylink.v1 import (
    account_pb2_grpc,
    common_pb2,
    event_pb2,
    job_pb2_grpc,
    link_pb2,
    link_pb2_grpc,
    link_token_pb2,
    link_token_pb2_grpc,
    sandbox_pb2_grpc,
)
from service import migrate
from service.config import Settings

LATEST_VERSION = "2021-07-28"


def base_settings() -> Settings:
    return Settings()


def _with_db(url: str, name: str) -> str:
    return re.sub(r"/[^/?]*(\?|$)", f"/{name}\\1", url, count=1) if url.count("/") >= 3 else url + "/" + name


async def create_test_database(url: str) -> str:
    """Creates (once) a migrated template named after the migrations' hash, then a fresh copy."""
    digest = hashlib.sha256(
        "".join(sql for _, _, sql in migrate.discover()).encode()
    ).hexdigest()[:10]
    template = f"paylink_tpl_{digest}"
    test_db = f"paylink_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute("SELECT pg_advisory_lock(4242)")
        try:
            if not await admin.fetchval("SELECT true FROM pg_database WHERE datname = $1", template):
                await admin.execute(f'CREATE DATABASE "{template}"')
                await migrate.migrate(_with_db(url, template))
            await admin.execute(f'CREATE DATABASE "{test_db}" TEMPLATE "{template}"')
        finally:
            await admin.execute("SELECT pg_advisory_unlock(4242)")
    finally:
        await admin.close()
    return _with_db(url, test_db)


async def drop_database(admin_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[-1].split("?")[0]
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@dataclasses.dataclass
class Client:
    """gRPC stubs that send the workspace's secret and an api-version."""

    channel: grpc.aio.Channel
    secret: str
    api_version: str | None = LATEST_VERSION

    def __post_init__(self) -> None:
        self.tokens = link_token_pb2_grpc.LinkTokenServiceStub(self.channel)
        self.link = link_pb2_grpc.LinkServiceStub(self.channel)
        self.accounts = account_pb2_grpc.AccountServiceStub(self.channel)
        self.jobs = job_pb2_grpc.JobServiceStub(self.channel)
        self.sandbox = sandbox_pb2_grpc.SandboxServiceStub(self.channel)

    def md(self, api_version: str | None | object = ...) -> list[tuple[str, str]]:
        version = self.api_version if api_version is ... else api_version
        out = [("x-api-secret", self.secret)]
        if version:
            out.append(("api-version", str(version)))
        return out

    async def token(self, jobs: list[int], *, api_version: str | None | object = ..., **fields: Any) -> link_token_pb2.LinkToken:
        fields.setdefault("org_name", "Acme Bank")
        if "account_id" not in fields:
            fields.setdefault("end_user_id", f"user-{uuid.uuid4().hex[:8]}")
        request = link_token_pb2.CreateLinkTokenRequest(required_jobs=jobs, **fields)
        return await self.tokens.CreateLinkToken(request, metadata=self.md(api_version))

    async def connect(self, username: str, jobs: list[int], *, platform_id: str = "sandbox_adp",
                      password: str = "pass_good", mfa_answer: str | None = None, **fields: Any
                      ) -> tuple[link_token_pb2.LinkToken, link_pb2.LinkSession]:
        """Creates a token, starts a session, logs in (and answers MFA when given)."""
        token = await self.token(jobs, **fields)
        session = await self.link.StartSession(link_pb2.StartSessionRequest(token=token.token), metadata=self.md())
        session = await self.link.SubmitCredentials(
            link_pb2.SubmitCredentialsRequest(session_id=session.id, platform_id=platform_id, username=username,
                                              password=password),
            metadata=self.md(),
        )
        if mfa_answer is not None and session.state == link_pb2.LINK_SESSION_STATE_MFA_REQUIRED:
            session = await self.link.SubmitMfa(
                link_pb2.SubmitMfaRequest(session_id=session.id, answer=mfa_answer), metadata=self.md())
        return token, session

    async def wait_session(self, session_id: str, state: int, timeout: float = 20) -> link_pb2.LinkSession:
        deadline = time.monotonic() + timeout
        while True:
            session = await self.link.GetSession(link_pb2.GetSessionRequest(session_id=session_id), metadata=self.md())
            if session.state == state:
                return session
            if time.monotonic() > deadline:
                raise AssertionError(f"session {session_id} is {link_pb2.LinkSessionState.Name(session.state)}")
            await asyncio.sleep(0.05)


@dataclasses.dataclass
class Received:
    topic: str
    key: str
    headers: dict[str, str]
    event: event_pb2.Event


class EventLog:
    """Consumes every topic under a prefix from the real broker and keeps what it read."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.items: list[Received] = []
        self._changed = asyncio.Event()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=f"test-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            metadata_max_age_ms=500,
        )
        self._pattern = "^" + re.escape(prefix) + ".*"
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe(pattern=self._pattern)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    self.items.append(Received(
                        topic=record.topic,
                        key=(record.key or b"").decode(),
                        headers={k: v.decode() for k, v in record.headers},
                        event=event_pb2.Event.FromString(record.value),
                    ))
            if batch:
                self._changed.set()

    def for_account(self, account_id: str) -> list[Received]:
        return [r for r in self.items if r.event.account_id == account_id]

    async def wait_for(self, predicate: Callable[[Received], bool], count: int = 1,
                       timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.items if predicate(r)]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"only {len(found)} of {count} expected events arrived")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    async def settled(self, account_id: str, timeout: float = 30) -> Received:
        """The link_session.completed event of an account (the latest)."""
        found = await self.wait_for(
            lambda r: r.event.account_id == account_id and r.event.event == "link_session.completed",
            timeout=timeout)
        return found[-1]


JOBS = common_pb2
