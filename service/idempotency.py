"""Idempotent mutations (AIP-155): `request_id` plus the request body.

Inside the mutation's own transaction, `claim` inserts the key first. A concurrent duplicate
blocks on the primary key until the first transaction ends, then sees its stored response: one
winner, no duplicates. Same id and same body within 7 days replays the stored response; same id
with another body is ALREADY_EXISTS. Stored responses are sealed (they may hold a link token).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message

from service import db, errors, sealed, uow
from service.context import CallContext
from service.deps import Deps
from service.vault import Vault, VaultError

M = TypeVar("M", bound=Message)

_CLAIM = """
INSERT INTO idempotency_keys (workspace_id, method, request_id, request_hash, response)
VALUES ($1, $2, $3, $4, '')
ON CONFLICT (workspace_id, method, request_id) DO UPDATE
   SET request_hash = EXCLUDED.request_hash, response = '', created_at = now()
 WHERE idempotency_keys.created_at < now() - interval '7 days'
RETURNING true
"""
_READ = """
SELECT request_hash, response FROM idempotency_keys
WHERE workspace_id = $1 AND method = $2 AND request_id = $3
"""
_STORE = """
UPDATE idempotency_keys SET response = $4 WHERE workspace_id = $1 AND method = $2 AND request_id = $3
"""

MAX_REQUEST_ID = 255


def request_hash(request: Message, api_version: str = "") -> bytes:
    """Hash of the body without its request_id, and of the api-version (it changes the meaning)."""
    body = type(request)()
    body.CopyFrom(request)
    body.ClearField("request_id")
    return hashlib.sha256(api_version.encode() + b"\0" + body.SerializeToString(deterministic=True)).digest()


class Key:
    def __init__(
        self, workspace_id: uuid.UUID, method: str, request: Message, request_id: str, api_version: str = ""
    ) -> None:
        self.workspace_id = workspace_id
        self.method = method
        self.request_id = request_id
        self.hash = request_hash(request, api_version)

    async def claim(self, conn: db.Conn, vault: Vault) -> bytes | None:
        """Claims the key in `conn`'s transaction; returns a stored response to replay, or None."""
        args = (self.workspace_id, self.method, self.request_id)
        if await conn.fetchval(_CLAIM, *args, self.hash):
            return None
        row = await conn.fetchrow(_READ, *args)
        if row is None:  # the first attempt rolled back between our insert and read: go again
            if await conn.fetchval(_CLAIM, *args, self.hash):
                return None
            row = await conn.fetchrow(_READ, *args)
            assert row is not None
        if bytes(row["request_hash"]) != self.hash:
            raise errors.already_exists(
                "REQUEST_ID_REUSED", f"request_id {self.request_id!r} was used with a different request"
            )
        return vault.open(bytes(row["response"]), aad=sealed.idempotency_aad(*args))

    async def store(self, conn: db.Conn, vault: Vault, response: Message) -> None:
        args = (self.workspace_id, self.method, self.request_id)
        blob = vault.seal(response.SerializeToString(), aad=sealed.idempotency_aad(*args))
        await conn.execute(_STORE, *args, blob)


def key_for(
    workspace_id: uuid.UUID, method: str, request: Message, request_id: str, api_version: str = ""
) -> Key | None:
    if not request_id:
        return None
    if len(request_id) > MAX_REQUEST_ID:
        raise errors.invalid_field("request_id", f"must be at most {MAX_REQUEST_ID} characters")
    return Key(workspace_id, method, request, request_id, api_version)


async def run_once(
    deps: Deps,
    call: CallContext,
    method: str,
    request: Message,
    request_id: str,
    reply_type: type[M],
    mutate: Callable[[uow.UnitOfWork], Awaitable[M]],
    *,
    single_statement: bool = False,
) -> M:
    """Runs a mutating RPC at most once per request_id: the one way every mutating RPC does it.

    With a request_id: claims the key, replays a stored reply, or runs `mutate` and stores its
    reply, all in one unit of work. Without one, `mutate` runs in a unit of work of its own — or,
    when the caller says the mutation is `single_statement` (one statement, no events: atomic by
    itself), with no explicit transaction at all (two round trips less).
    """
    if not request_id and single_statement:
        async with deps.pool.acquire() as conn:
            work = uow.UnitOfWork(deps, conn)
            reply = await mutate(work)
            if work.has_events:
                raise AssertionError(f"{method}: a single_statement mutation emitted events")
            return reply
    key = key_for(call.workspace.id, method, request, request_id, call.version_label)
    async with uow.begin(deps) as work:
        if key is not None:
            replay = await key.claim(work.conn, deps.vault)
            if replay is not None:
                return reply_type.FromString(replay)
        reply = await mutate(work)
        if key is not None:
            await key.store(work.conn, deps.vault, reply)
        return reply


async def erase(conn: db.Conn, workspace_id: uuid.UUID) -> int:
    """Deletes a deleted workspace's stored responses (sealed; one may hold a link token)."""
    result: str = await conn.execute("DELETE FROM idempotency_keys WHERE workspace_id = $1", workspace_id)
    return int(result.rsplit(" ", 1)[-1])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mentions(response: bytes, end_user_id: str, account_ids: list[str]) -> bool:
    """True when a serialized response holds one of the accounts' ids, or the end user's id as a
    whole string field (its length prefix and bytes)."""
    if any(a.encode() in response for a in account_ids):
        return True
    value = end_user_id.encode()
    return _varint(len(value)) + value in response


async def erase_mentioning(
    conn: db.Executor, vault: Vault, workspace_id: uuid.UUID, end_user_id: str, account_ids: list[uuid.UUID]
) -> int:
    """Deletes the workspace's stored responses that name the end user or one of the accounts (an
    erasure). They are sealed and name no owner, so each is opened (7 days of them at most); one
    that no key of the ring opens is deleted too. Returns how many."""
    ids_ = [str(a) for a in account_ids]
    doomed: list[tuple[str, str]] = []
    rows = await conn.fetch(
        "SELECT method, request_id, response FROM idempotency_keys WHERE workspace_id = $1 AND length(response) > 0",
        workspace_id,
    )
    for row in rows:
        aad = sealed.idempotency_aad(workspace_id, row["method"], row["request_id"])
        try:
            response = vault.open(bytes(row["response"]), aad=aad)
        except VaultError:
            response = None
        if response is None or mentions(response, end_user_id, ids_):
            doomed.append((row["method"], row["request_id"]))
    status: str = await conn.execute(
        "DELETE FROM idempotency_keys WHERE workspace_id = $1 AND (method, request_id) IN"
        " (SELECT * FROM unnest($2::text[], $3::text[]))",
        workspace_id,
        [m for m, _ in doomed],
        [r for _, r in doomed],
    )
    return int(status.rsplit(" ", 1)[-1])


# --- Retention (service/janitor.py) and key rotation (`vault reencrypt`) ----------------------------

_PRUNE = """
DELETE FROM idempotency_keys WHERE ctid IN (
  SELECT ctid FROM idempotency_keys WHERE created_at < now() - interval '7 days' LIMIT $1)
"""
_RESEAL = """
UPDATE idempotency_keys SET response = $4
WHERE workspace_id = $1 AND method = $2 AND request_id = $3 AND response = $5
"""


async def prune_expired(conn: db.Executor, batch: int) -> int:
    """Deletes up to `batch` records older than 7 days (AIP-155's window: after it a request_id may
    be reused); returns how many."""
    status: str = await conn.execute(_PRUNE, batch)
    return int(status.rsplit(" ", 1)[-1])


async def reseal(pool: db.Pool, vault: Vault) -> int:
    """Re-seals stored responses not under the primary key; returns how many. Each update is a
    compare-and-set on the blob read, so a concurrent writer (already under the primary key) wins."""
    done = 0
    for row in await pool.fetch(
        "SELECT workspace_id, method, request_id, response FROM idempotency_keys WHERE length(response) > 0"
    ):
        blob = bytes(row["response"])
        if vault.needs_reencrypt(blob):
            aad = sealed.idempotency_aad(row["workspace_id"], row["method"], row["request_id"])
            new = vault.reseal(blob, aad=aad)
            await pool.execute(_RESEAL, row["workspace_id"], row["method"], row["request_id"], new, blob)
            done += 1
    return done
