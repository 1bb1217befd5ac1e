"""The sealed grant each connected account keeps (the driver's credentials and/or platform session):
storing it, replacing it with a job's refreshed one, opening it, deleting it.

This module owns the `account_credentials` table.

Two kinds of writer, two rules:
- `store`: a login with credentials (a new account, or a re-link with credentials the user typed)
  or a sandbox control. Each runs under the account's
  row lock and writes what it has just made from the current grant or from new credentials: the
  newest grant by construction, stored whatever was there.
- `replace`: a job that re-accessed the account returns a refreshed grant, derived from the grant it
  was claimed with (queue.CLAIM) long before its outcome is written. Meanwhile the account may have
  been re-linked (new credentials through On Demand Updates), changed by a sandbox control
  (ChangeAllocation, AddPaystub, ...), disconnected or erased. So a job's grant is stored only if the
  stored blob is still the one the job was claimed with (compare-and-set, one statement for a whole
  batch of outcomes); otherwise the newer grant (or the absence of one) is kept and the job's is
  dropped. The job's outcome does not change: it succeeded with the data it fetched.
- `store_unless_changed`: a bound Link session that re-accessed with the stored grant (On Demand
  Updates without new credentials, possibly through an MFA round). Its platform call, like a job's,
  started from a grant that may have been replaced meanwhile (a sandbox control, a job's renewed
  grant): it carries the keyed digest of that grant (`digest`, never the grant) and stores its own
  only if the stored grant still has it; otherwise the newer grant (or its absence) is kept.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Sequence

from service import db, sealed
from service.deps import Deps
from service.vault import VaultError

log = logging.getLogger("paylink.grants")


@dataclasses.dataclass(frozen=True, slots=True)
class NewGrant:
    """A grant a job's platform call returned, and the sealed grant it was derived from."""

    account_id: uuid.UUID
    secret: bytes = dataclasses.field(repr=False)  # the new grant (plaintext: memory only)
    replaces: bytes = dataclasses.field(repr=False)  # the sealed blob the job was claimed with


_UPSERT = """
INSERT INTO account_credentials (account_id, key_id, sealed) VALUES ($1, $2, $3)
ON CONFLICT (account_id) DO UPDATE SET key_id = EXCLUDED.key_id, sealed = EXCLUDED.sealed, updated_at = now()
"""
# A compare-and-set per account, all in one statement: only rows whose blob is still the expected one
# change; an account whose credentials were deleted gets none back (never re-inserted). Each account
# comes back with whether it was replaced and, if not, the blob stored (from the statement's snapshot).
_REPLACE = """
WITH n AS (
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::bytea[]) AS n(account_id, key_id, sealed, expected)),
replaced AS (
  UPDATE account_credentials c SET key_id = n.key_id, sealed = n.sealed, updated_at = now()
  FROM n WHERE c.account_id = n.account_id AND c.sealed = n.expected
  RETURNING c.account_id)
SELECT n.account_id, r.account_id IS NOT NULL AS replaced, c.sealed AS stored
FROM n LEFT JOIN replaced r ON r.account_id = n.account_id
       LEFT JOIN account_credentials c ON c.account_id = n.account_id
"""


def _seal(deps: Deps, account_id: uuid.UUID, grant: bytes) -> bytes:
    return deps.vault.seal(grant, aad=sealed.ACCOUNT_GRANT.aad(account_id))


async def store(deps: Deps, conn: db.Conn, account_id: uuid.UUID, grant: bytes) -> None:
    """Seals and stores the account's grant, whatever was stored (see the module's rules)."""
    blob = _seal(deps, account_id, grant)
    await conn.execute(_UPSERT, account_id, deps.vault.key_id_of(blob), blob)


async def replace(deps: Deps, conn: db.Conn, grants: Sequence[NewGrant]) -> set[uuid.UUID]:
    """Stores each job's new grant (at most one per account) if the account's stored grant is still
    the one the job was claimed with, in one statement. Returns the accounts whose stored grant was
    kept instead: a newer grant was stored meanwhile, or the credentials were deleted.

    A blob re-sealed meanwhile by `vault reencrypt` holds the same grant under another blob: for
    those (a second statement, only when there is one) the grant is compared opened."""
    if not grants:
        return set()
    missed = await _replace(deps, conn, [(g, g.replaces) for g in grants])
    resealed = [(g, stored) for g, stored in missed if stored is not None and _same_grant(deps, g, stored)]
    if resealed:
        missed = [m for m in missed if m not in resealed] + await _replace(deps, conn, resealed)
    kept = {g.account_id for g, _ in missed}
    if kept:
        log.info(
            "a newer grant was stored while the job ran: kept it",
            extra={"accounts": sorted(str(a) for a in kept)},
        )
    return kept


async def _replace(
    deps: Deps, conn: db.Conn, items: Sequence[tuple[NewGrant, bytes]]
) -> list[tuple[NewGrant, bytes | None]]:
    """One compare-and-set statement; returns the grants it did not store, each with the blob stored."""
    blobs = [_seal(deps, g.account_id, g.secret) for g, _ in items]
    rows = await conn.fetch(
        _REPLACE,
        [g.account_id for g, _ in items],
        [deps.vault.key_id_of(blob) for blob in blobs],
        blobs,
        [expected for _, expected in items],
    )
    by_account = {r["account_id"]: r for r in rows}
    return [
        (g, None if by_account[g.account_id]["stored"] is None else bytes(by_account[g.account_id]["stored"]))
        for g, _ in items
        if not by_account[g.account_id]["replaced"]
    ]


def _same_grant(deps: Deps, grant: NewGrant, stored: bytes) -> bool:
    """Whether `stored` holds the very grant the job was claimed with (re-sealed into another blob)."""
    try:
        return open_grant(deps, grant.account_id, stored) == open_grant(
            deps, grant.account_id, grant.replaces
        )
    except VaultError:
        return False


_GRANT_DIGEST = b"account-grant"


def digest(deps: Deps, account_id: uuid.UUID, grant: bytes) -> bytes:
    """The keyed digest (Vault.digest) of an account's opened grant: what a re-access session keeps
    to recognise the grant it started from, re-sealed or not, without keeping the grant."""
    return deps.vault.digest([_GRANT_DIGEST, account_id.bytes, grant])


async def store_unless_changed(
    deps: Deps, conn: db.Conn, account_id: uuid.UUID, grant: bytes, started_from: bytes
) -> bool:
    """Stores a re-access session's grant if the stored grant is still the one it started from
    (`started_from`: its `digest`, under any key of the ring), under the credentials' row lock.
    Returns False, and keeps what is stored, when a newer grant was stored meanwhile or the
    credentials were deleted (never re-inserted)."""
    blob = await conn.fetchval(
        "SELECT sealed FROM account_credentials WHERE account_id = $1 FOR UPDATE", account_id
    )
    same = False
    if blob is not None:
        try:
            stored = open_grant(deps, account_id, bytes(blob))
            same = started_from in deps.vault.digests([_GRANT_DIGEST, account_id.bytes, stored])
        except VaultError:
            same = False
    if not same:
        log.info(
            "a newer grant was stored while the session re-accessed: kept it",
            extra={"accounts": [str(account_id)]},
        )
        return False
    await store(deps, conn, account_id, grant)
    return True


def open_grant(deps: Deps, account_id: uuid.UUID, blob: bytes) -> bytes:
    """The unsealed grant of an account (the sealed blob comes with a claimed job, see queue.CLAIM)."""
    return deps.vault.open(blob, aad=sealed.ACCOUNT_GRANT.aad(account_id))


async def load(deps: Deps, conn: db.Executor, account_id: uuid.UUID) -> bytes | None:
    """The account's grant, opened; None when it has no stored credentials."""
    blob = await conn.fetchval("SELECT sealed FROM account_credentials WHERE account_id = $1", account_id)
    return None if blob is None else open_grant(deps, account_id, bytes(blob))


async def delete(conn: db.Executor, account_ids: Sequence[uuid.UUID]) -> int:
    """Erases these accounts' stored credentials (disconnect, erasure); returns how many there were."""
    status: str = await conn.execute(
        "DELETE FROM account_credentials WHERE account_id = ANY($1::uuid[])", list(account_ids)
    )
    return int(status.rsplit(" ", 1)[-1])
