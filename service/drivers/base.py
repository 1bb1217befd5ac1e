"""The platform driver interface: everything paylink needs from a payroll platform.

A driver logs a user in (with MFA when the platform asks), re-accesses an account with what was
stored at the last login, runs one method per job type and switches direct deposit. The core
(sessions, workers) only talks to this interface, so a real driver is added by implementing it and
registering it in `service.drivers.registry` — nothing else changes.

Secrets: `Credentials.password`, MFA answers and `AccessGrant.secret` exist in memory only during a
call; the core seals them with the vault before anything is stored. Drivers must never log them and
must never put them in a `PlatformError` message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Protocol

from paylink.v1 import common_pb2, data_pb2, shift_pb2, tax_form_pb2


@dataclasses.dataclass(frozen=True, slots=True)
class PlatformInfo:
    """A payroll platform a driver serves."""

    id: str
    name: str
    supported_jobs: frozenset[int]  # common_pb2.JobName values
    always_mfa: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class EmployerInfo:
    """An employer whose payroll a platform runs (the catalogue, CatalogService)."""

    id: str
    name: str
    ein: str  # "NN-NNNNNNN"
    platform_id: str
    address: data_pb2.Address  # treat as read-only


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    """What the user typed in Link. Plaintext: keep in memory only."""

    username: str
    password: str


@dataclasses.dataclass(frozen=True, slots=True)
class AccessGrant:
    """What re-access needs: the credentials and/or a platform session, as opaque bytes.

    The core seals `secret` with AES-256-GCM before storing it and passes it back unsealed to
    `reaccess` and to job methods. Its format belongs to the driver.
    """

    secret: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class MfaChallenge:
    """The platform asks a question before it lets the user in.

    `state` is driver-private (sealed by the core while it waits for the answer): it must hold
    whatever `answer_mfa` needs to finish the login, e.g. the pending credentials.
    """

    type: str
    prompt: str
    state: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class LoggedIn:
    """Login or re-access succeeded."""

    grant: AccessGrant


LoginResult = LoggedIn | MfaChallenge


class PlatformError(Exception):
    """A platform refused or failed. `code` is a common_pb2.JobErrorCode value.

    `message` is safe to show and store (the platform's reason); it never holds secrets.
    `transient` errors (platform_unavailable, timeout) are retried with backoff by the worker.
    """

    def __init__(self, code: int, message: str = "", *, transient: bool = False) -> None:
        name = common_pb2.JobErrorCode.Name(code)  # type: ignore[arg-type]
        super().__init__(name + (f": {message}" if message else ""))
        self.code = code
        self.message = message
        self.transient = transient


class JobPending(Exception):
    """The platform accepted the work but has not finished it; check again after `retry_after`."""

    def __init__(self, retry_after: dt.timedelta, message: str = "") -> None:
        super().__init__(message or "pending")
        self.retry_after = retry_after
        self.message = message


@dataclasses.dataclass(slots=True)
class RenewedGrant:
    """Where a job method leaves the grant to keep from now on, when its call changed it: a platform
    that rotates its session on use, or the sandbox, whose platform state lives in the grant (a
    direct deposit switch). paylink stores it like a refresh's re-access grant (only if the stored
    grant did not change meanwhile: service/grants.py)."""

    grant: AccessGrant | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class JobContext:
    """What a job method is told about the run it is part of."""

    account_id: str
    platform_id: str
    grant: AccessGrant
    attempt: int  # 1 for the first attempt of this job
    # Set when the job already reported PENDING: when that first happened.
    pending_since: dt.datetime | None = None
    renewed: RenewedGrant = dataclasses.field(default_factory=RenewedGrant)


@dataclasses.dataclass(frozen=True, slots=True)
class SwitchTarget:
    """Full target of a deposit switch (plaintext account number: memory only)."""

    type: int  # common_pb2.DepositAccountType
    routing_number: str
    account_number: str
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class SwitchRequest:
    """A direct deposit switch to perform."""

    action: int  # common_pb2.SwitchAction
    allocation_type: int  # common_pb2.AllocationType
    value: int
    target: SwitchTarget


@dataclasses.dataclass(frozen=True, slots=True)
class PaystubQuery:
    """Which paystubs to fetch."""

    count: int = 0
    from_pay_date: str = ""
    to_pay_date: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class FetchedPaystub:
    """A paystub with the platform's own stable id (used to de-duplicate across refreshes)."""

    external_id: str
    paystub: data_pb2.Paystub  # id/account_id/created_at/document_id left empty; the core fills them
    # The platform's id of the paystub's original document (see fetch_documents); "" if none.
    document_external_id: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class ShiftQuery:
    """Which shifts to fetch: inclusive YYYY-MM-DD bounds; "" for the platform's default window
    (from) or no bound (to)."""

    from_date: str = ""
    to_date: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class FetchedShift:
    """A shift with the platform's stable id."""

    external_id: str
    shift: shift_pb2.Shift  # id/account_id/created_at left empty


@dataclasses.dataclass(frozen=True, slots=True)
class FetchedTaxForm:
    """A tax form with the platform's stable id and that of its original document."""

    external_id: str
    tax_form: tax_form_pb2.TaxForm  # id/account_id/created_at/document_id left empty
    document_external_id: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class DocumentInfo:
    """Metadata of a document the platform holds; its bytes come from fetch_document_content."""

    external_id: str
    type: int  # document_pb2.DocumentType
    name: str
    content_type: str
    size_bytes: int
    sha256: str  # 64 lowercase hex digits, as the platform states it (the core checks it)
    pay_date: str = ""  # for paystub documents
    year: int = 0  # for tax form documents


class PlatformDriver(Protocol):
    """A payroll platform connector. All methods may raise PlatformError."""

    def platforms(self) -> list[PlatformInfo]:
        """The platforms this driver serves."""
        ...

    async def login(self, platform_id: str, credentials: Credentials) -> LoginResult:
        """First login with what the user typed."""
        ...

    async def answer_mfa(self, platform_id: str, state: bytes, answer: str) -> LoggedIn:
        """Finishes a login after an MFA challenge; PlatformError(MFA_FAILED) on a wrong answer."""
        ...

    async def reaccess(self, account_id: str, platform_id: str, grant: AccessGrant) -> LoginResult:
        """Logs in again with a stored grant (On Demand Updates). May ask MFA; raises
        PlatformError(INVALID_CREDENTIALS) when the stored grant no longer works."""
        ...

    async def fetch_identity(self, ctx: JobContext) -> data_pb2.Identity:
        """Identity data (account_id and timestamps left empty)."""
        ...

    async def fetch_employment(self, ctx: JobContext) -> data_pb2.Employment:
        """Employment data."""
        ...

    async def fetch_income(self, ctx: JobContext) -> data_pb2.Income:
        """Income data."""
        ...

    async def fetch_paystubs(self, ctx: JobContext, query: PaystubQuery) -> list[FetchedPaystub]:
        """Paystubs, newest first."""
        ...

    async def fetch_shifts(self, ctx: JobContext, query: ShiftQuery) -> list[FetchedShift]:
        """Shifts, newest first. PlatformError(NO_DATA) when the user has none (salaried)."""
        ...

    async def fetch_tax_forms(self, ctx: JobContext, year: int) -> list[FetchedTaxForm]:
        """Tax forms of `year` (0: every year the platform has), newest year first."""
        ...

    async def fetch_documents(self, ctx: JobContext) -> list[DocumentInfo]:
        """Metadata of the documents the platform holds, newest first."""
        ...

    async def fetch_document_content(self, ctx: JobContext, external_id: str) -> bytes:
        """The bytes of one document; PlatformError(NO_DATA) when it no longer exists."""
        ...

    def employers(self) -> list[EmployerInfo]:
        """The employers whose payroll this driver's platforms run (for the catalogue)."""
        ...

    async def fetch_allocations(self, ctx: JobContext) -> data_pb2.DirectDepositAllocations:
        """Current direct deposit allocations."""
        ...

    async def switch_direct_deposit(
        self, ctx: JobContext, request: SwitchRequest
    ) -> data_pb2.DirectDepositAllocations:
        """Performs the switch; returns the allocations after it.
        PlatformError(ALLOCATION_REJECTED, reason) when the platform refuses."""
        ...
