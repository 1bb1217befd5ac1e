"""Every sealed column, and the associated data (AAD) that binds each blob to its row.

The writers seal with `COLUMN.aad(key)` and `vault reencrypt` walks `COLUMNS`: one list, so a
renamed prefix or a new sealed column cannot silently escape key rotation.
"""

from __future__ import annotations

import dataclasses
import uuid


@dataclasses.dataclass(frozen=True, slots=True)
class SealedColumn:
    table: str
    key: str  # the uuid primary key column whose value goes into the AAD
    column: str
    prefix: bytes
    key_id_column: str | None = None  # a column that names the sealing key, kept in step

    def aad(self, key: uuid.UUID) -> bytes:
        return self.prefix + str(key).encode()


ACCOUNT_GRANT = SealedColumn("account_credentials", "account_id", "sealed", b"account-grant:", "key_id")
LINK_TOKEN_ALLOCATION = SealedColumn("link_tokens", "id", "allocation_sealed", b"link-token-allocation:")
SESSION_MFA = SealedColumn("link_sessions", "id", "mfa_state_sealed", b"session-mfa:")
SESSION_ALLOCATION = SealedColumn("link_sessions", "id", "chosen_allocation_sealed", b"session-allocation:")
JOB_PARAMS = SealedColumn("jobs", "id", "params_sealed", b"job-params:")

COLUMNS: tuple[SealedColumn, ...] = (
    ACCOUNT_GRANT,
    LINK_TOKEN_ALLOCATION,
    SESSION_MFA,
    SESSION_ALLOCATION,
    JOB_PARAMS,
)


@dataclasses.dataclass(frozen=True, slots=True)
class PersonalColumn:
    """A column of an end user's payroll data, sealed per account and data kind with the AAD
    `pii:<kind>:<account_id>[:<item>]` (service/pii.py). Its owning module seals what was stored
    before sealing and re-seals after a key rotation (`vault reencrypt`, service/maintenance.py)."""

    table: str
    column: str
    aad_shape: str  # documentation of the AAD (docs/privacy.md)

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"


RESULT_DATA = PersonalColumn("job_results", "data", "pii:<kind>:<account_id>")
PAYSTUB_DATA = PersonalColumn("paystubs", "data", "pii:paystub:<account_id>:<external_id>")
SHIFT_DATA = PersonalColumn("shifts", "data", "pii:shift:<account_id>:<external_id>")
TAX_FORM_DATA = PersonalColumn("tax_forms", "data", "pii:tax_form:<account_id>:<external_id>")
DOCUMENT_CONTENT = PersonalColumn(
    "document_contents", "content", "pii:document:<account_id>:<document_id>:<part>"
)

PERSONAL_DATA: tuple[PersonalColumn, ...] = (
    RESULT_DATA,
    PAYSTUB_DATA,
    SHIFT_DATA,
    TAX_FORM_DATA,
    DOCUMENT_CONTENT,
)

# Stored idempotent responses, sealed with `idempotency_aad` (composite key).
IDEMPOTENCY_RESPONSE = "idempotency_keys.response"

# Every other binary column, and why it is not sealed. tests/integration/test_sealed_columns.py
# checks that every bytea column of the schema is in exactly one of COLUMNS, PERSONAL_DATA,
# IDEMPOTENCY_RESPONSE or this map: a new or renamed column must say which.
NOT_SEALED: dict[str, str] = {
    "api_secrets.secret_hash": "SHA-256 of a random secret",
    "link_tokens.token_hash": "SHA-256 of a random token",
    "link_tokens.allocation": "deposit target with the account number masked (last four)",
    "link_tokens.options": "display options of Link",
    "jobs.params": "job parameters with account numbers masked (last four)",
    "job_results.content_hash": "keyed digest (HMAC-SHA256 under a vault-derived key)",
    "idempotency_keys.request_hash": "SHA-256 of the request",
    "outbox.payload": "events, which carry no personal data (tests/e2e/test_privacy.py)",
    "accounts.login_fingerprint": "SHA-256 of platform and username, scrubbed by an erasure",
    "link_sessions.login_fingerprint": "SHA-256 of platform and username, scrubbed by an erasure",
    "documents.sha256": "SHA-256 of a whole document, the integrity check the API returns",
    "link_sessions.reaccess_grant_digest": (
        "keyed digest (HMAC-SHA256 under a vault-derived key) of the grant a re-access started from"
    ),
}


def idempotency_aad(workspace_id: uuid.UUID, method: str, request_id: str) -> bytes:
    """AAD of a stored idempotent response (idempotency_keys has a composite key)."""
    return f"idempotency:{workspace_id}:{method}:{request_id}".encode()
