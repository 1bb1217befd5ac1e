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


# Personal data, sealed per account and data kind with an AAD of its own shape (service/pii.py:
# `pii:<kind>:<account_id>[:<item>]`); `vault reencrypt` covers them through `pii.seal_existing`.
PERSONAL_DATA: tuple[tuple[str, str], ...] = (("job_results", "data"), ("paystubs", "data"))


def idempotency_aad(workspace_id: uuid.UUID, method: str, request_id: str) -> bytes:
    """AAD of a stored idempotent response (idempotency_keys has a composite key)."""
    return f"idempotency:{workspace_id}:{method}:{request_id}".encode()
