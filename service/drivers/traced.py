"""A span per platform call: wraps any PlatformDriver so every login, re-access, MFA answer, fetch
and switch is a CLIENT span (`platform <method>`) in the trace of the work that made it.

The registry hands out drivers wrapped in this; the driver itself knows nothing about tracing.
"""

from __future__ import annotations

from types import TracebackType

from opentelemetry.trace import SpanKind, Status, StatusCode
from paylink.v1 import common_pb2, data_pb2

from service import tracing
from service.drivers.base import (
    AccessGrant,
    Credentials,
    DocumentInfo,
    EmployerInfo,
    FetchedPaystub,
    FetchedShift,
    FetchedTaxForm,
    JobContext,
    JobPending,
    LoggedIn,
    LoginResult,
    PaystubQuery,
    PlatformDriver,
    PlatformError,
    PlatformInfo,
    ShiftQuery,
    SwitchRequest,
)


class _span:  # noqa: N801 - a block, named as the function it was
    """The platform call's CLIENT span for the block; a PlatformError, a JobPending or any other
    exception leaving it is noted on the span. A plain object, not a generator's context manager
    around `tracing.span`'s (two per job). When nothing would record it, no span at all: nothing
    inside a call stores its context (no driver reads or sends a traceparent), so an unrecorded one
    only cost its making (bench/NOTES.md, inflight session 29); the job's span stays current."""

    __slots__ = ("_block", "_span")

    def __init__(self, method: str, platform_id: str) -> None:
        self._block = (
            tracing.span(
                f"platform {method}",
                kind=SpanKind.CLIENT,
                attributes={"paylink.platform_id": platform_id},
                record_exception=False,
                set_status_on_exception=False,
            )
            if tracing.recording()
            else None
        )

    def __enter__(self) -> None:
        if self._block is not None:
            self._span = self._block.__enter__()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        if self._block is None:
            return None
        if exc is not None:
            span = self._span
            if isinstance(exc, PlatformError):
                code = common_pb2.JobErrorCode.Name(common_pb2.JobErrorCode.ValueType(exc.code))
                span.set_attribute("paylink.error_code", code)
                span.set_attribute("paylink.transient", exc.transient)
                span.set_status(Status(StatusCode.ERROR, code))
            elif isinstance(exc, JobPending):
                span.set_attribute("paylink.pending", True)
            else:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        return self._block.__exit__(kind, exc, tb)


class TracedDriver:
    """PlatformDriver that forwards to `inner`, each call in its own span."""

    def __init__(self, inner: PlatformDriver) -> None:
        self.inner = inner

    def platforms(self) -> list[PlatformInfo]:
        return self.inner.platforms()

    def employers(self) -> list[EmployerInfo]:
        return self.inner.employers()

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

    async def fetch_shifts(self, ctx: JobContext, query: ShiftQuery) -> list[FetchedShift]:
        with _span("fetch_shifts", ctx.platform_id):
            return await self.inner.fetch_shifts(ctx, query)

    async def fetch_tax_forms(self, ctx: JobContext, year: int) -> list[FetchedTaxForm]:
        with _span("fetch_tax_forms", ctx.platform_id):
            return await self.inner.fetch_tax_forms(ctx, year)

    async def fetch_documents(self, ctx: JobContext) -> list[DocumentInfo]:
        with _span("fetch_documents", ctx.platform_id):
            return await self.inner.fetch_documents(ctx)

    async def fetch_document_content(self, ctx: JobContext, external_id: str) -> bytes:
        with _span("fetch_document_content", ctx.platform_id):
            return await self.inner.fetch_document_content(ctx, external_id)

    async def fetch_allocations(self, ctx: JobContext) -> data_pb2.DirectDepositAllocations:
        with _span("fetch_allocations", ctx.platform_id):
            return await self.inner.fetch_allocations(ctx)

    async def switch_direct_deposit(
        self, ctx: JobContext, request: SwitchRequest
    ) -> data_pb2.DirectDepositAllocations:
        with _span("switch_direct_deposit", ctx.platform_id):
            return await self.inner.switch_direct_deposit(ctx, request)
