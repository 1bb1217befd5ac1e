"""A span per platform call: wraps any PlatformDriver so every login, re-access, MFA answer, fetch
and switch is a CLIENT span (`platform <method>`) in the trace of the work that made it.

The registry hands out drivers wrapped in this; the driver itself knows nothing about tracing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry.trace import SpanKind, Status, StatusCode
from paylink.v1 import common_pb2, data_pb2

from service import tracing
from service.drivers.base import (
    AccessGrant,
    Credentials,
    FetchedPaystub,
    JobContext,
    JobPending,
    LoggedIn,
    LoginResult,
    PaystubQuery,
    PlatformDriver,
    PlatformError,
    PlatformInfo,
    SwitchRequest,
)


@contextlib.contextmanager
def _span(method: str, platform_id: str) -> Iterator[None]:
    with tracing.tracer.start_as_current_span(
        f"platform {method}",
        kind=SpanKind.CLIENT,
        attributes={"paylink.platform_id": platform_id},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except PlatformError as exc:
            code = common_pb2.JobErrorCode.Name(common_pb2.JobErrorCode.ValueType(exc.code))
            span.set_attribute("paylink.error_code", code)
            span.set_attribute("paylink.transient", exc.transient)
            span.set_status(Status(StatusCode.ERROR, code))
            raise
        except JobPending:
            span.set_attribute("paylink.pending", True)
            raise
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


class TracedDriver:
    """PlatformDriver that forwards to `inner`, each call in its own span."""

    def __init__(self, inner: PlatformDriver) -> None:
        self.inner = inner

    def platforms(self) -> list[PlatformInfo]:
        return self.inner.platforms()

    async def login(self, platform_id: str, credentials: Credentials) -> LoginResult:
        with _span("login", platform_id):
            return await self.inner.login(platform_id, credentials)

    async def answer_mfa(self, platform_id: str, state: bytes, answer: str) -> LoggedIn:
        with _span("answer_mfa", platform_id):
            return await self.inner.answer_mfa(platform_id, state, answer)

    async def reaccess(self, account_id: str, platform_id: str, grant: AccessGrant) -> LoginResult:
        with _span("reaccess", platform_id):
            return await self.inner.reaccess(account_id, platform_id, grant)

    async def fetch_identity(self, ctx: JobContext) -> data_pb2.Identity:
        with _span("fetch_identity", ctx.platform_id):
            return await self.inner.fetch_identity(ctx)

    async def fetch_employment(self, ctx: JobContext) -> data_pb2.Employment:
        with _span("fetch_employment", ctx.platform_id):
            return await self.inner.fetch_employment(ctx)

    async def fetch_income(self, ctx: JobContext) -> data_pb2.Income:
        with _span("fetch_income", ctx.platform_id):
            return await self.inner.fetch_income(ctx)

    async def fetch_paystubs(self, ctx: JobContext, query: PaystubQuery) -> list[FetchedPaystub]:
        with _span("fetch_paystubs", ctx.platform_id):
            return await self.inner.fetch_paystubs(ctx, query)

    async def fetch_allocations(self, ctx: JobContext) -> data_pb2.DirectDepositAllocations:
        with _span("fetch_allocations", ctx.platform_id):
            return await self.inner.fetch_allocations(ctx)

    async def switch_direct_deposit(
        self, ctx: JobContext, request: SwitchRequest
    ) -> data_pb2.DirectDepositAllocations:
        with _span("switch_direct_deposit", ctx.platform_id):
            return await self.inner.switch_direct_deposit(ctx, request)
