"""Personal data at rest: what is sealed, how it is bound to its row, and the keyed change digest.

Every stored piece of an end user's payroll data (job results, paystubs, shifts, tax forms and
document bytes; the registry is service/sealed.py: PERSONAL_DATA) is sealed with the vault (AES-256-GCM). The associated data binds a blob to
its account and data kind (and, for items of a list such as paystubs, to the item's platform id),
so a blob copied to another account, kind or item does not open:

    b"pii:" + kind + b":" + account_id [+ b":" + item]

Rows written before sealing existed hold the plain serialized protobuf message. They are told
apart by their first byte: a sealed blob starts with the vault's version byte 0x01, and a
serialized protobuf message never does (a field key byte is `field_number << 3 | wire_type` with
field_number >= 1, so it is at least 0x08). `open_data` reads both; `vault reencrypt` seals the old
rows online, in batches, and re-keys their digests: each table's owning module pages through its
rows (one writer per table), with `resealed` saying what a value becomes.

Change detection (`updated_at` moves only when the content changed) compares keyed digests
(`Vault.digest`, HMAC-SHA256 under a key derived from the vault key), never a plain hash of the
plaintext, which anyone could test guesses against.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence

from paylink.v1 import common_pb2

from service.vault import BLOB_VERSION, Vault


class Kind(enum.StrEnum):
    """A kind of personal data; part of every blob's associated data (never rename one)."""

    IDENTITY = "identity"
    EMPLOYMENT = "employment"
    INCOME = "income"
    ALLOCATIONS = "direct_deposit_allocations"
    PAYSTUB = "paystub"
    SHIFT = "shift"
    TAX_FORM = "tax_form"
    DOCUMENT = "document"


# The kind of each job_results row that holds data (the paystubs row holds only times and digest).
RESULT_KINDS: dict[int, Kind] = {
    common_pb2.JOB_NAME_IDENTITY: Kind.IDENTITY,
    common_pb2.JOB_NAME_EMPLOYMENT: Kind.EMPLOYMENT,
    common_pb2.JOB_NAME_INCOME: Kind.INCOME,
    common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS: Kind.ALLOCATIONS,
    common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH: Kind.ALLOCATIONS,
}


def result_kind(name: int) -> str:
    """The kind of a job_results row by its job name; a job type added later is its own kind."""
    kind = RESULT_KINDS.get(name)
    return kind.value if kind is not None else f"job-{name}"


def aad(kind: str, account_id: uuid.UUID | str, item: str = "") -> bytes:
    """The associated data of one blob: its kind, its account and (for list items) its item id."""
    out = b"pii:" + kind.encode() + b":" + str(account_id).encode()
    return out + b":" + item.encode() if item else out


def is_sealed(stored: bytes) -> bool:
    """True for a vault blob, False for a plain serialized message written before sealing."""
    return len(stored) > 0 and stored[0] == BLOB_VERSION


def seal(vault: Vault, kind: str, account_id: uuid.UUID | str, body: bytes, item: str = "") -> bytes:
    return vault.seal(body, aad=aad(kind, account_id, item))


def open_data(vault: Vault, kind: str, account_id: uuid.UUID | str, stored: bytes, item: str = "") -> bytes:
    """The serialized message of a stored value, sealed or (written before sealing) plain."""
    if not is_sealed(stored):
        return stored
    return vault.open(stored, aad=aad(kind, account_id, item))


def set_parts(items: Sequence[tuple[str, bytes]]) -> list[bytes]:
    """What the digest of a set of records covers (paystubs, shifts, tax forms, documents): every
    (external id, serialized content), in a fixed order, so the order the platform listed them in
    does not count as a change."""
    return sorted(external_id.encode() + b"\0" + body for external_id, body in items)


# --- Sealing what was stored before, and re-keying after a rotation (`vault reencrypt`) ----------
# The owning modules (results.py, records_store.py, documents.py) page through their rows and
# write; these rules say what a stored value becomes.


def current(vault: Vault, stored: bytes) -> bool:
    """True when a stored value is sealed under the primary key (nothing to do)."""
    return is_sealed(stored) and not vault.needs_reencrypt(stored)


def resealed(
    vault: Vault, kind: str, account_id: uuid.UUID | str, stored: bytes, item: str = ""
) -> tuple[bytes, bytes | None]:
    """(plaintext, what to store instead or None when `stored` is current) of a stored value."""
    body = open_data(vault, kind, account_id, stored, item)
    return body, None if current(vault, stored) else seal(vault, kind, account_id, body, item)
