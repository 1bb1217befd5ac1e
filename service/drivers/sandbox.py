"""The sandbox driver: named fake platforms whose behaviour is chosen by the username (docs/spec.md §6).

`user_good+anything` behaves like `user_good` but is a different person: the part before `+`
picks the behaviour, the whole username seeds the data (see `sandbox_data`). The driver is
stateless: everything it needs between calls lives in the grant or the MFA state, both JSON.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import json
import random
from collections.abc import Callable

from paylink.v1 import common_pb2, data_pb2

from service.drivers import (
    sandbox_auth,
    sandbox_catalog,
    sandbox_data,
    sandbox_documents,
    sandbox_shifts,
    sandbox_tax_forms,
)
from service.drivers.base import (
    AccessGrant,
    Credentials,
    DocumentInfo,
    EmployerInfo,
    FetchedPaystub,
    FetchedShift,
    FetchedTaxForm,
    JobContext,
    LoggedIn,
    LoginResult,
    PaystubQuery,
    PlatformError,
    PlatformInfo,
    ShiftQuery,
    SwitchRequest,
)
from service.drivers.sandbox_auth import (
    PASSWORD,
    Grant,
    MfaKind,
    User,
    _answer_ok,
    user_of,
)

__all__ = [
    "ALL_JOBS",
    "DATA_JOBS",
    "PASSWORD",
    "PLATFORMS",
    "SANDBOX_ADP",
    "SANDBOX_GIG",
    "SANDBOX_MFA",
    "SANDBOX_SLOW",
    "SANDBOX_WORKDAY",
    "Grant",
    "MfaKind",
    "SandboxDriver",
    "User",
    "user_of",
]

E = common_pb2.JobErrorCode
J = common_pb2
ALL_JOBS = frozenset(v for v in common_pb2.JobName.values() if v != common_pb2.JOB_NAME_UNSPECIFIED)
DATA_JOBS = ALL_JOBS - {common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH}

SANDBOX_ADP = "sandbox_adp"
SANDBOX_WORKDAY = "sandbox_workday"
SANDBOX_GIG = "sandbox_gig"
SANDBOX_MFA = "sandbox_mfa"
SANDBOX_SLOW = "sandbox_slow"

PLATFORMS = (
    PlatformInfo(SANDBOX_ADP, "ADP (Sandbox)", ALL_JOBS),
    # Workday keeps no time clock: no shifts.
    PlatformInfo(SANDBOX_WORKDAY, "Workday (Sandbox)", ALL_JOBS - {J.JOB_NAME_SHIFTS}),
    # A gig platform: no employment and no direct deposit (payouts go to a debit card).
    PlatformInfo(
        SANDBOX_GIG,
        "GigWorks (Sandbox)",
        frozenset(
            {
                J.JOB_NAME_IDENTITY,
                J.JOB_NAME_INCOME,
                J.JOB_NAME_PAYSTUBS,
                J.JOB_NAME_SHIFTS,
                J.JOB_NAME_TAX_FORMS,
                J.JOB_NAME_DOCUMENTS,
            }
        ),
    ),
    PlatformInfo(SANDBOX_MFA, "Paycor MFA (Sandbox)", ALL_JOBS, always_mfa=True),
    PlatformInfo(SANDBOX_SLOW, "SlowPay (Sandbox)", ALL_JOBS),
)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SandboxDriver:
    """PlatformDriver for the sandbox platforms (plus `expire_grant`/`add_paystub` for SandboxService)."""

    def __init__(
        self,
        latency: float = 0.0,
        slow_latency: float = 2.0,
        jitter: float = 0.0,
        pending_delay: dt.timedelta = dt.timedelta(seconds=60),
        clock: Callable[[], dt.datetime] = _utcnow,
        session_lifetime: dt.timedelta = sandbox_auth.SESSION_LIFETIME,
    ) -> None:
        self._latency, self._jitter = latency, jitter  # each call takes latency ± up to jitter
        self._failures: collections.Counter[tuple[str, str]] = collections.Counter()  # user_recovers
        self._slow_latency, self._pending_delay, self._clock = slow_latency, pending_delay, clock
        self._session_seconds = int(session_lifetime.total_seconds())  # see Grant.session_expires
        self._platforms, self._grants = {p.id: p for p in PLATFORMS}, sandbox_auth.KeptGrants()

    def platforms(self) -> list[PlatformInfo]:
        """The five sandbox platforms."""
        return list(PLATFORMS)

    # -- login -------------------------------------------------------------------------------

    async def login(self, platform_id: str, credentials: Credentials) -> LoginResult:
        """First login; `user_locked` is locked whatever the password."""
        platform = await self._call(platform_id)
        user = user_of(credentials.username)
        sandbox_auth.platform_trouble(user, credentials.username, "login", self._failures)
        if user is User.LOCKED:
            raise PlatformError(
                E.JOB_ERROR_CODE_ACCOUNT_LOCKED, "Your account is locked after too many sign-in attempts"
            )
        if user is None or credentials.password != PASSWORD:
            raise PlatformError(E.JOB_ERROR_CODE_INVALID_CREDENTIALS, "The username or password is incorrect")
        grant = Grant(credentials.username, credentials.password, platform_id, "").refreshed(self._expiry())
        if platform.always_mfa:
            return sandbox_auth.challenge(MfaKind.SECURITY_QUESTION, grant)
        if user is User.MFA:
            return sandbox_auth.challenge(MfaKind.CODE, grant)
        return LoggedIn(grant.encode())

    async def answer_mfa(self, platform_id: str, state: bytes, answer: str) -> LoggedIn:
        """Finishes a login or re-access; PlatformError(MFA_FAILED) on a wrong answer."""
        await self._call(platform_id)
        try:
            parsed = json.loads(state)
            kind = MfaKind(parsed["kind"])
            grant = Grant.from_dict(parsed["grant"])
        except (ValueError, TypeError, KeyError):
            raise PlatformError(
                E.JOB_ERROR_CODE_MFA_FAILED, "The verification session is not valid"
            ) from None
        if grant.platform_id != platform_id:
            raise PlatformError(E.JOB_ERROR_CODE_MFA_FAILED, "The verification session is not valid")
        if not _answer_ok(kind, answer):
            raise PlatformError(E.JOB_ERROR_CODE_MFA_FAILED, "The verification answer is incorrect")
        return LoggedIn(grant.refreshed(self._expiry()).encode())

    async def reaccess(self, account_id: str, platform_id: str, grant: AccessGrant) -> LoginResult:
        """Logs in again with a stored grant; may ask MFA (`user_reauth_mfa`, always-MFA platform)."""
        platform = await self._call(platform_id)
        stored = sandbox_auth.usable(self._grants.decode(grant.secret), platform_id)
        user = user_of(stored.username)
        sandbox_auth.platform_trouble(user, stored.username, "reaccess", self._failures)
        if user is User.EXPIRED:
            raise PlatformError(E.JOB_ERROR_CODE_INVALID_CREDENTIALS, "The saved password no longer works")
        if platform.always_mfa:
            return sandbox_auth.challenge(MfaKind.SECURITY_QUESTION, stored)
        if user is User.REAUTH_MFA:
            return sandbox_auth.challenge(MfaKind.CODE, stored)
        if stored.session_valid(int(self._clock().timestamp())):
            return LoggedIn(grant)  # the session is still open: the very grant, nothing to store
        return LoggedIn(self._grants.encode(stored.refreshed(self._expiry())))

    # -- jobs --------------------------------------------------------------------------------

    async def fetch_identity(self, ctx: JobContext) -> data_pb2.Identity:
        """Identity of the grant's user."""
        grant = await self._job(ctx, common_pb2.JOB_NAME_IDENTITY)
        return sandbox_data.identity(grant.username)

    async def fetch_employment(self, ctx: JobContext) -> data_pb2.Employment:
        """Employment of the grant's user."""
        grant = await self._job(ctx, common_pb2.JOB_NAME_EMPLOYMENT)
        return sandbox_data.employment(grant.username, ctx.platform_id)

    async def fetch_income(self, ctx: JobContext) -> data_pb2.Income:
        """Income of the grant's user (VARIABLE pay frequency on the gig platform)."""
        grant = await self._job(ctx, common_pb2.JOB_NAME_INCOME)
        return sandbox_data.income(
            grant.username, gig=ctx.platform_id == SANDBOX_GIG, days_advanced=grant.days_advanced
        )

    async def fetch_paystubs(self, ctx: JobContext, query: PaystubQuery) -> list[FetchedPaystub]:
        """Paystubs, newest first, including those added with `add_paystub`."""
        grant = await self._job(ctx, common_pb2.JOB_NAME_PAYSTUBS)
        return sandbox_data.paystubs(
            grant.username,
            grant.extra_paystubs,
            query,
            grant.days_advanced,
            gig=ctx.platform_id == SANDBOX_GIG,
        )

    async def fetch_shifts(self, ctx: JobContext, query: ShiftQuery) -> list[FetchedShift]:
        """Hourly shifts or gig blocks, newest first; none for a salaried employee."""
        grant = await self._job(ctx, common_pb2.JOB_NAME_SHIFTS)
        gig = ctx.platform_id == SANDBOX_GIG
        return sandbox_shifts.shifts(
            grant.username,
            query,
            gig=gig,
            extra_paystubs=grant.extra_paystubs,
            days_advanced=grant.days_advanced,
        )

    async def fetch_tax_forms(self, ctx: JobContext, year: int) -> list[FetchedTaxForm]:
        """W-2s (1099-K and 1099-NEC on the gig platform) of the complete past years."""
        grant = await self._job(ctx, common_pb2.JOB_NAME_TAX_FORMS)
        forms = sandbox_tax_forms.tax_forms(
            grant.username,
            ctx.platform_id,
            year,
            gig=ctx.platform_id == SANDBOX_GIG,
            days_advanced=grant.days_advanced,
        )
        if not forms:
            raise PlatformError(E.JOB_ERROR_CODE_NO_DATA, "No tax forms have been issued for this period")
        return forms

    async def fetch_documents(self, ctx: JobContext) -> list[DocumentInfo]:
        """PDFs of the visible paystubs and of the tax forms."""
        grant = await self._job(ctx, common_pb2.JOB_NAME_DOCUMENTS)
        return [info for info, _ in self._documents(grant, ctx.platform_id)]

    async def fetch_document_content(self, ctx: JobContext, external_id: str) -> bytes:
        """One PDF's bytes; NO_DATA for an id the platform does not have."""
        grant = await self._job(ctx, common_pb2.JOB_NAME_DOCUMENTS)
        for info, content in self._documents(grant, ctx.platform_id):
            if info.external_id == external_id:
                return content
        raise PlatformError(E.JOB_ERROR_CODE_NO_DATA, "The document no longer exists")

    def employers(self) -> list[EmployerInfo]:
        """The sandbox employer catalogue."""
        return list(sandbox_catalog.employers())

    @staticmethod
    def _documents(grant: Grant, platform_id: str) -> tuple[tuple[DocumentInfo, bytes], ...]:
        gig = platform_id == SANDBOX_GIG
        return sandbox_documents.documents(
            grant.username, platform_id, grant.extra_paystubs, grant.days_advanced, gig=gig
        )

    async def fetch_allocations(self, ctx: JobContext) -> data_pb2.DirectDepositAllocations:
        """The user's existing direct deposit allocations."""
        grant = await self._job(ctx, common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS)
        return self._allocations(grant)

    async def switch_direct_deposit(
        self, ctx: JobContext, request: SwitchRequest
    ) -> data_pb2.DirectDepositAllocations:
        """Applies the switch to the user's allocations as they are now (see sandbox_data). The
        platform keeps the result, as a real one would: the grant after the call remembers it
        (`ctx.renewed`), so later allocations jobs (and switches) find it."""
        grant = await self._job(ctx, common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH)
        try:
            switched = sandbox_data.switched_allocations(
                grant.username,
                request,
                grant.extra_paystubs,
                days_advanced=grant.days_advanced,
                existing=self._allocations(grant),
            )
        except sandbox_data.SwitchRejected as exc:
            raise PlatformError(E.JOB_ERROR_CODE_ALLOCATION_REJECTED, str(exc)) from None
        ctx.renewed.grant = self._grants.encode(grant.with_switch(switched))
        return switched

    # -- sandbox-only controls -----------------------------------------------------------------

    def expire_grant(self, grant: AccessGrant) -> AccessGrant:
        """The grant as if the user changed the password at the platform: re-access fails."""
        return dataclasses.replace(Grant.decode(grant.secret), expired=True).encode()

    def add_paystub(self, grant: AccessGrant) -> tuple[AccessGrant, FetchedPaystub]:
        """One more paystub, newer than all the others; returns the new grant and that paystub."""
        stored = Grant.decode(grant.secret)
        updated = dataclasses.replace(stored, extra_paystubs=stored.extra_paystubs + 1)
        newest = sandbox_data.paystubs(
            updated.username,
            updated.extra_paystubs,
            PaystubQuery(count=1),
            updated.days_advanced,
            gig=updated.platform_id == SANDBOX_GIG,
        )[0]
        return updated.encode(), newest

    def advance_clock(self, grant: AccessGrant, days: int) -> tuple[AccessGrant, int]:
        """The grant with the account's sandbox clock `days` later; returns it and the total advance."""
        stored = Grant.decode(grant.secret)
        updated = dataclasses.replace(stored, days_advanced=stored.days_advanced + days)
        return updated.encode(), updated.days_advanced

    def change_allocation(
        self, grant: AccessGrant, target: data_pb2.DepositTarget
    ) -> tuple[AccessGrant, data_pb2.DirectDepositAllocations]:
        """The grant as if the user moved the whole pay to `target` outside paylink (last four only)."""
        stored = Grant.decode(grant.secret)
        deposit = {
            "name": target.name,
            "type": int(target.type),
            "routing_number": target.routing_number,
            "account_number_last_four": target.account_number_last_four,
        }
        updated = dataclasses.replace(stored, deposit=deposit, switched=None)  # the whole pay moved
        return updated.encode(), self._allocations(updated)

    # -- internals -----------------------------------------------------------------------------

    def _expiry(self) -> int:
        """When a platform session opened now ends (Unix seconds)."""
        return int(self._clock().timestamp()) + self._session_seconds

    @staticmethod
    def _allocations(grant: Grant) -> data_pb2.DirectDepositAllocations:
        """The platform's allocations now: as the last switch through paylink left them, else the
        account ChangeAllocation moved the pay to, else the profile's own split."""
        now = grant.switched_allocations()
        return now if now is not None else sandbox_data.allocations(grant.username, grant.deposit_target())

    async def _call(self, platform_id: str) -> PlatformInfo:
        """Resolves the platform and simulates its latency."""
        platform = self._platform(platform_id)
        if (delay := self.delay(platform_id)) > 0:
            await asyncio.sleep(delay)
        return platform

    def delay(self, platform_id: str) -> float:
        """One call's latency ± up to the jitter, uniformly; the jitter is cut to the latency, so the
        spread is symmetric and the mean call takes the latency (bench/latency.py divides by it)."""
        delay = self._latency + (self._slow_latency if platform_id == SANDBOX_SLOW else 0.0)
        return delay + random.uniform(-min(self._jitter, delay), min(self._jitter, delay))  # noqa: S311

    def _platform(self, platform_id: str) -> PlatformInfo:
        platform = self._platforms.get(platform_id)
        if platform is None:
            raise PlatformError(E.JOB_ERROR_CODE_JOB_NOT_SUPPORTED, f"Unknown platform {platform_id!r}")
        return platform

    async def _job(self, ctx: JobContext, job: int) -> Grant:
        """Runs the user's behaviour for one job; returns the grant when the job should succeed."""
        platform = self._platform(ctx.platform_id)
        if job not in platform.supported_jobs:
            job_name = (
                common_pb2.JobName.Name(common_pb2.JobName.ValueType(job)).removeprefix("JOB_NAME_").lower()
            )
            raise PlatformError(
                E.JOB_ERROR_CODE_JOB_NOT_SUPPORTED, f"{platform.name} does not support {job_name}"
            )
        await self._call(ctx.platform_id)
        grant = sandbox_auth.usable(self._grants.decode(ctx.grant.secret), ctx.platform_id)
        user = user_of(grant.username)
        if user is User.ERROR:
            if job == common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH:
                raise PlatformError(
                    E.JOB_ERROR_CODE_ALLOCATION_REJECTED,
                    "Direct deposit changes are blocked for 10 days after a recent bank account change",
                )
            raise PlatformError(
                E.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE, "The payroll system returned an internal error"
            )
        if user is User.PENDING:
            sandbox_auth.pending(ctx, self._pending_delay, self._clock())
        if user is User.FLAKY and ctx.attempt <= 2:
            raise PlatformError(
                E.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE,
                "The payroll system is temporarily unavailable",
                transient=True,
            )
        if user is User.NODATA and job in DATA_JOBS:
            raise PlatformError(E.JOB_ERROR_CODE_NO_DATA, "The payroll system has no data of this kind")
        return grant
