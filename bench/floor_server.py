"""The one-query floors: what any Python implementation of two paylink RPCs must at least pay here.

A grpc.aio server on uvloop with paylink's server options and paylink's own messages, and for each
RPC exactly one asyncpg statement on a pool like paylink's (same size, no reset query on release):

- read floor, `AccountService/GetAccount`: one primary-key SELECT, the same statement paylink runs
  (the account row, its data times and its refresh schedules in one round trip), built into the
  same `Account` paylink answers (monitoring switch, tags, schedules) with paylink's own timestamp
  setter;
- write floor, `LinkTokenService/CreateLinkToken`: one INSERT into `link_tokens` with the same
  columns paylink writes, answering the `LinkToken` with its new secret.

No authentication, no interceptor, no metrics, no validation beyond parsing the id: the gap between
paylink and this server is what paylink adds on top of the one round trip. The benchmarks send it the
same requests as paylink, metadata included (`x-api-secret`, `api-version`: every client of this API
sends them, so receiving them is part of the floor); it reads none of it.

    python bench/floor_server.py PORT DATABASE_URL WORKSPACE_ID
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import hashlib
import json
import secrets
import sys
import uuid
from typing import Any, cast

import asyncpg
import grpc
import uvloop
from paylink.v1 import (
    account_pb2,
    account_pb2_grpc,
    common_pb2,
    link_token_pb2,
    link_token_pb2_grpc,
)

from service import accounts, timeutil

# The same statement as paylink's GetAccount (`service/accounts.py`, read here rather than copied
# so the two cannot drift): the account row with its data times and refresh schedules, one round trip.
_READ = accounts.ONE_WITH_DATA_TIMES + " WHERE id = $1 AND workspace_id = $2"
_INSERT = """
INSERT INTO link_tokens (id, workspace_id, token_hash, api_version, org_name, required_jobs, end_user_id,
  bound_account_id, platform_id, employer_id, allocation, allocation_sealed, options, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
"""
_MONITORING = {
    "active": common_pb2.MONITORING_STATUS_ACTIVE,
    "degraded": common_pb2.MONITORING_STATUS_DEGRADED,
    "user_action_required": common_pb2.MONITORING_STATUS_USER_ACTION_REQUIRED,
}
_FIELDS = {
    common_pb2.JOB_NAME_IDENTITY: "identity",
    common_pb2.JOB_NAME_EMPLOYMENT: "employment",
    common_pb2.JOB_NAME_INCOME: "income",
    common_pb2.JOB_NAME_PAYSTUBS: "paystubs",
    common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS: "direct_deposit_allocations",
    common_pb2.JOB_NAME_SHIFTS: "shifts",
    common_pb2.JOB_NAME_TAX_FORMS: "tax_forms",
    common_pb2.JOB_NAME_DOCUMENTS: "documents",
}


class Unregistered(grpc.GenericRpcHandler):
    """The servicers' methods served unregistered, from one table, as paylink serves its own
    (service/api/server.py `_Wrapping`): grpc.aio's accept loop then waits on one pending request
    instead of one per registered method (AccountService's 14 and LinkTokenService's 2), which it
    loops over for every call it takes. The floor stays the least any implementation pays."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        server.add_generic_rpc_handlers([self])

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self.handlers.get(handler_call_details.method)

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """The generated code's generic handlers: the same methods as the registered ones, unused."""

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler


class NoReset(asyncpg.Connection):
    def get_reset_query(self) -> str:
        return ""


class Accounts(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, pool: asyncpg.Pool, workspace: uuid.UUID) -> None:
        self.pool, self.workspace = pool, workspace

    async def GetAccount(  # noqa: N802
        self,
        request: account_pb2.GetAccountRequest,
        context: grpc.aio.ServicerContext[account_pb2.GetAccountRequest, account_pb2.Account],
    ) -> account_pb2.Account:
        try:
            account_id = uuid.UUID(request.account_id)
        except ValueError:
            await context.abort(grpc.StatusCode.NOT_FOUND, "account not found")
        row = await self.pool.fetchrow(_READ, account_id, self.workspace)
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "account not found")
        account = account_pb2.Account(
            id=str(row["id"]),
            end_user_id=row["end_user_id"],
            platform_id=row["platform_id"],
            platform_name=row["platform_id"],
            link_token_id=str(row["link_token_id"]),
            connected=row["connected"],
            monitoring_status=_MONITORING.get(
                row["monitoring_status"], common_pb2.MONITORING_STATUS_UNSPECIFIED
            ),
            monitoring_enabled=row["monitoring_enabled"],
            tags=json.loads(row["tags"]),
        )
        timeutil.set_ts(account.created_at, row["created_at"])
        for name, refreshed, updated in zip(
            row["r_names"], row["r_refreshed"], row["r_updated"], strict=True
        ):
            field = _FIELDS.get(name)
            if field:
                timeutil.set_ts(getattr(account.data_refreshed_at, field), refreshed)
                timeutil.set_ts(getattr(account.data_updated_at, field), updated)
        if row["r_refreshed"]:
            timeutil.set_ts(account.refreshed_at, max(row["r_refreshed"]))
        for name, cadence, next_at, active in zip(
            row["s_names"], row["s_cadences"], row["s_next"], row["s_active"], strict=True
        ):
            entry = account.schedules.add(name=name, active=active)
            timeutil.set_duration(entry.cadence, cadence)
            timeutil.set_ts(entry.next_refresh_at, next_at)
        return account


class LinkTokens(link_token_pb2_grpc.LinkTokenServiceServicer):
    def __init__(self, pool: asyncpg.Pool, workspace: uuid.UUID) -> None:
        self.pool, self.workspace = pool, workspace

    async def CreateLinkToken(  # noqa: N802
        self,
        request: link_token_pb2.CreateLinkTokenRequest,
        context: grpc.aio.ServicerContext[link_token_pb2.CreateLinkTokenRequest, link_token_pb2.LinkToken],
    ) -> link_token_pb2.LinkToken:
        token_id = uuid.uuid4()
        secret = "lt_" + secrets.token_urlsafe(32)
        created = dt.datetime.now(dt.UTC)
        expires = created + dt.timedelta(minutes=15)
        token = link_token_pb2.LinkToken(
            id=str(token_id),
            mode=link_token_pb2.WORKSPACE_MODE_SANDBOX,
            org_name=request.org_name,
            required_jobs=list(request.required_jobs),
            end_user_id=request.end_user_id,
            platform_id=request.platform_id,
            language=request.language or link_token_pb2.LANGUAGE_EN,
            api_version="2021-07-28",
        )
        token.created_at.FromDatetime(created)
        token.expires_at.FromDatetime(expires)
        await self.pool.execute(
            _INSERT,
            token_id,
            self.workspace,
            hashlib.sha256(secret.encode()).digest(),
            token.api_version,
            token.org_name,
            list(token.required_jobs),
            token.end_user_id,
            None,
            token.platform_id,
            "",
            None,
            None,
            token.SerializeToString(),
            created,
            expires,
        )
        token.token = secret
        return token


async def main(port: int, url: str, workspace: uuid.UUID, pool_size: int) -> None:
    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size, connection_class=NoReset)
    server = grpc.aio.server(
        maximum_concurrent_rpcs=1000,
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 1024 * 1024),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ],
    )
    # The generated stubs declare every servicer method abstract; at run time the base classes answer
    # UNIMPLEMENTED for the methods a floor does not serve.
    accounts_servicer = Accounts(pool, workspace)  # type: ignore[abstract]
    tokens_servicer = LinkTokens(pool, workspace)  # type: ignore[abstract]
    table = cast(grpc.aio.Server, Unregistered(server))
    account_pb2_grpc.add_AccountServiceServicer_to_server(accounts_servicer, table)
    link_token_pb2_grpc.add_LinkTokenServiceServicer_to_server(tokens_servicer, table)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    gc.collect()  # as paylink's API server does once started (service/api/server.py)
    gc.freeze()
    gc.set_threshold(5_000, 10, 10)  # and the same collector thresholds (service/api/server.py)
    print(f"floor serving on 127.0.0.1:{bound}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(
        main(
            int(sys.argv[1]),
            sys.argv[2],
            uuid.UUID(sys.argv[3]),
            int(sys.argv[4]) if len(sys.argv) > 4 else 8,
        )
    )
