"""Personal data at rest: what is sealed, how it is bound to its row, and the keyed change digest.

Every stored piece of an end user's payroll data (job results, paystubs; shifts, tax forms and
documents as they land) is sealed with the vault (AES-256-GCM). The associated data binds a blob to
its account and data kind (and, for items of a list such as paystubs, to the item's platform id),
so a blob copied to another account, kind or item does not open:

    b"pii:" + kind + b":" + account_id [+ b":" + item]

Rows written before sealing existed hold the plain serialized protobuf message. They are told
apart by their first byte: a sealed blob starts with the vault's version byte 0x01, and a
serialized protobuf message never does (a field key byte is `field_number << 3 | wire_type` with
field_number >= 1, so it is at least 0x08). `open_data` reads both; `seal_existing` (run by
`vault reencrypt`) seals the old rows online, in batches, and re-keys their digests.

Change detection (`updated_at` moves only when the content changed) compares keyed digests
(`Vault.digest`, HMAC-SHA256 under a key derived from the vault key), never a plain hash of the
plaintext, which anyone could test guesses against.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence

from paylink.v1 import common_pb2

from service import db
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


def paystub_set_parts(items: Sequence[tuple[str, bytes]]) -> list[bytes]:
    """What the paystubs digest covers: every (external id, serialized paystub), in a fixed order,
    so the order the platform listed them in does not count as a change."""
    return sorted(external_id.encode() + b"\0" + body for external_id, body in items)


# --- Sealing what was stored before, and re-keying after a rotation (`vault reencrypt`) ----------

_RESULTS_PAGE = """
SELECT account_id, name, data, content_hash FROM job_results
WHERE data IS NOT NULL AND ($1::uuid IS NULL OR (account_id, name) > ($1, $2))
ORDER BY account_id, name LIMIT $3
"""
_RESULT_CAS = """
UPDATE job_results SET data = $3, content_hash = $4
WHERE account_id = $1 AND name = $2 AND data = $5 AND content_hash = $6
"""
_PAYSTUB_ACCOUNTS = """
SELECT DISTINCT account_id FROM paystubs WHERE ($1::uuid IS NULL OR account_id > $1)
ORDER BY account_id LIMIT $2
"""
_PAYSTUB_CAS = "UPDATE paystubs SET data = $3 WHERE id = $1 AND account_id = $2 AND data = $4"
_PAYSTUB_SET_CAS = """
UPDATE job_results SET content_hash = $3 WHERE account_id = $1 AND name = $2 AND content_hash = $4
"""


def _current(vault: Vault, stored: bytes) -> bool:
    return is_sealed(stored) and not vault.needs_reencrypt(stored)


async def seal_existing(pool: db.Pool, vault: Vault, batch: int = 200) -> dict[str, int]:
    """Seals plain rows and re-seals rows under an older key, online, in batches of `batch`, and
    re-computes their digests under the primary key. Each update is a compare-and-set on what was
    read, so a concurrent writer (whose row is already sealed under the primary key) wins.
    Returns how many values of each column it changed; a second run returns zeros."""
    results = await _seal_results(pool, vault, batch)
    paystubs, sets = await _seal_paystubs(pool, vault, batch)
    return {"job_results.data": results, "paystubs.data": paystubs, "job_results.content_hash": sets}


async def _seal_results(pool: db.Pool, vault: Vault, batch: int) -> int:
    done = 0
    last: tuple[uuid.UUID | None, int] = (None, 0)
    while rows := await pool.fetch(_RESULTS_PAGE, *last, batch):
        last = (rows[-1]["account_id"], rows[-1]["name"])
        for row in rows:
            stored, old_digest = bytes(row["data"]), bytes(row["content_hash"])
            kind = result_kind(row["name"])
            body = open_data(vault, kind, row["account_id"], stored)
            digest = vault.digest([body])
            if _current(vault, stored) and digest == old_digest:
                continue
            sealed = stored if _current(vault, stored) else seal(vault, kind, row["account_id"], body)
            status = await pool.execute(
                _RESULT_CAS, row["account_id"], row["name"], sealed, digest, stored, old_digest
            )
            done += status.endswith(" 1")
    return done


async def _seal_paystubs(pool: db.Pool, vault: Vault, batch: int) -> tuple[int, int]:
    done = sets = 0
    last: uuid.UUID | None = None
    while accounts := await pool.fetch(_PAYSTUB_ACCOUNTS, last, batch):
        last = accounts[-1]["account_id"]
        for account in accounts:
            account_id = account["account_id"]
            async with pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT id, external_id, data FROM paystubs WHERE account_id = $1", account_id
                )
                old_digest = await conn.fetchval(
                    "SELECT content_hash FROM job_results WHERE account_id = $1 AND name = $2",
                    account_id,
                    common_pb2.JOB_NAME_PAYSTUBS,
                )
                items = []
                for row in rows:
                    stored = bytes(row["data"])
                    body = open_data(vault, Kind.PAYSTUB, account_id, stored, row["external_id"])
                    items.append((row["external_id"], body))
                    if not _current(vault, stored):
                        new = seal(vault, Kind.PAYSTUB, account_id, body, row["external_id"])
                        status = await conn.execute(_PAYSTUB_CAS, row["id"], account_id, new, stored)
                        done += status.endswith(" 1")
                digest = vault.digest(paystub_set_parts(items))
                if old_digest is not None and bytes(old_digest) != digest:
                    status = await conn.execute(
                        _PAYSTUB_SET_CAS, account_id, common_pb2.JOB_NAME_PAYSTUBS, digest, old_digest
                    )
                    sets += status.endswith(" 1")
    return done, sets
