"""Job results: the latest data per account and type, with refreshed_at and updated_at; paystubs.

The one writer of `job_results` and `paystubs` (the reads are service/result_reads.py; shifts, tax
forms and documents keep their refreshed_at/updated_at here through `mark_set`).

The data is personal: it is sealed with the vault before it is written and opened when read
(service/pii.py: AAD bound to the account and the data kind). `refreshed_at` moves on every
successful fetch; `updated_at` only when the content really changed, compared by a keyed digest of
the deterministic serialization (`Vault.digests`: under every key of the ring, so a key rotation
alone is no change), never by a plain hash of the plaintext.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence

import asyncpg
from google.protobuf.message import Message
from paylink.v1 import common_pb2, data_pb2

from service import db, ids, pii, sealed, timeutil
from service.drivers.base import FetchedPaystub
from service.vault import Vault

# Upserts the latest data and says whether its content changed, with what was stored before (the
# CTE reads the row as it was when the statement started). $4: the content's digests under every
# key of the ring, the primary's first (the one stored). No row comes back for an account that an
# erasure fenced (the database skips the write).
#
# A stored row is updated and only a new one inserted, rather than one INSERT ... ON CONFLICT DO
# UPDATE: that fired the erasure fence (migration 0017's BEFORE INSERT OR UPDATE row trigger, a query
# on `accounts`) twice for a refresh, before the insert and before the update of the conflicting row;
# now once (tests/integration/test_results_store_many.py::test_storing_a_result_fires_the_erasure_fence_once).
# A fenced account's row is skipped by the update's firing and not inserted (it was there); a row
# another transaction inserted since the statement began takes the insert's ON CONFLICT update, as
# before (the fence then fires twice, as before).
_CHANGE = """
  data = {new}.data,
  refreshed_at = {new}.refreshed_at,
  updated_at = CASE WHEN job_results.content_hash = ANY({ring}) THEN job_results.updated_at ELSE {new}.refreshed_at END,
  content_hash = {new}.content_hash"""
_UPSERT = f"""
WITH old AS (SELECT data, content_hash FROM job_results WHERE account_id = $1 AND name = $2),
v AS (SELECT $3::bytea AS data, ($4::bytea[])[1] AS content_hash, $5::timestamptz AS refreshed_at),
updated AS (
  UPDATE job_results SET {_CHANGE.format(new="v", ring="$4::bytea[]")}
  FROM v WHERE account_id = $1 AND name = $2
  RETURNING 1),
inserted AS (
  INSERT INTO job_results (account_id, name, data, content_hash, refreshed_at, updated_at)
  SELECT $1, $2, data, content_hash, refreshed_at, refreshed_at FROM v WHERE NOT EXISTS (SELECT FROM old)
  ON CONFLICT (account_id, name) DO UPDATE SET {_CHANGE.format(new="EXCLUDED", ring="$4::bytea[]")}
  RETURNING 1)
SELECT NOT coalesce((SELECT content_hash FROM old) = ANY($4::bytea[]), false) AS changed,
       (SELECT data FROM old) AS previous
FROM (SELECT * FROM updated UNION ALL SELECT * FROM inserted) AS stored
"""
# Upserts paystubs by the platform's id in one statement; says which ones are new. As `_UPSERT`, the
# stored ones are updated and only the new ones inserted, so the erasure fence (0017's BEFORE INSERT OR
# UPDATE row trigger on paystubs) fires once per paystub, where INSERT ... ON CONFLICT DO UPDATE fired
# it twice for each one stored (tests/integration/test_paystubs_fence.py). A fenced account's paystubs
# are skipped by either firing; one another transaction inserted since the statement began takes the
# insert's ON CONFLICT update, as before (the fence then fires twice, as before).
_PAYSTUB_SET = (
    "data = {new}.data, pay_date = {new}.pay_date, document_external_id = {new}.document_external_id"
)
_PAYSTUB_OUT = "id, account_id, external_id, pay_date, data, created_at, document_external_id"
_PAYSTUBS = f"""
WITH v AS (
  SELECT i AS id, e AS external_id, d AS pay_date, b AS data, x AS document_external_id
  FROM unnest($2::uuid[], $3::text[], $4::date[], $5::bytea[], $6::text[]) AS u(i, e, d, b, x)),
updated AS (
  UPDATE paystubs SET {_PAYSTUB_SET.format(new="v")}
  FROM v WHERE paystubs.account_id = $1 AND paystubs.external_id = v.external_id
  RETURNING {", ".join(f"paystubs.{c}" for c in _PAYSTUB_OUT.split(", "))}, false AS inserted),
inserted AS (
  INSERT INTO paystubs (id, account_id, external_id, pay_date, data, document_external_id)
  SELECT id, $1, external_id, pay_date, data, document_external_id FROM v
  WHERE NOT EXISTS (SELECT FROM paystubs p WHERE p.account_id = $1 AND p.external_id = v.external_id)
  ON CONFLICT (account_id, external_id) DO UPDATE SET {_PAYSTUB_SET.format(new="EXCLUDED")}
  RETURNING {_PAYSTUB_OUT}, (xmax = 0) AS inserted)
SELECT s.id, s.account_id, s.external_id, s.pay_date, s.data, s.created_at, s.inserted,
  (SELECT d.id FROM documents d WHERE d.account_id = s.account_id
     AND d.external_id = s.document_external_id AND s.document_external_id <> '') AS document_id
FROM (SELECT * FROM updated UNION ALL SELECT * FROM inserted) AS s
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Stored:
    """What storing a job's data found: whether the content changed, and the previous content."""

    changed: bool
    previous: bytes | None = None  # the serialized message stored before (None for paystubs or the first)
    added_paystubs: tuple[data_pb2.Paystub, ...] = ()  # paystubs stored for the first time, newest first


async def store(
    conn: db.Conn, vault: Vault, account_id: uuid.UUID, name: int, data: Message, at: dt.datetime
) -> Stored:
    """Stores the latest data of a job type, sealed; `refreshed_at` moves, `updated_at` only on change."""
    kind = pii.result_kind(name)
    body = data.SerializeToString(deterministic=True)
    sealed = pii.seal(vault, kind, account_id, body)
    row = await conn.fetchrow(_UPSERT, account_id, name, sealed, vault.digests([body]), at)
    if row is None:  # fenced by an erasure: nothing was stored
        return Stored(False)
    previous = row["previous"]
    if previous is not None:
        previous = pii.open_data(vault, kind, account_id, bytes(previous))
    return Stored(row["changed"], previous)


# `_UPSERT` for many (account, name) pairs, each at most once, in one statement. $4: every row's
# digests under the ring's $6 keys one after the other (row i's are $4[(i-1)*$6+1 : i*$6], the
# primary's first); the change is judged against the live row exactly as `_UPSERT` judges it.
_UPSERT_MANY = f"""
WITH u AS (
  SELECT a, n, d, t, ($4::bytea[])[(i - 1) * $6 + 1 : i * $6] AS ring
  FROM unnest($1::uuid[], $2::smallint[], $3::bytea[], $5::timestamptz[]) WITH ORDINALITY AS x(a, n, d, t, i)),
old AS (SELECT r.account_id, r.name, r.data, r.content_hash FROM job_results r JOIN u ON r.account_id = u.a AND r.name = u.n),
updated AS (
  UPDATE job_results SET {_CHANGE.format(new="v", ring="v.ring")}
  FROM (SELECT a, n, d AS data, ring[1] AS content_hash, t AS refreshed_at, ring FROM u) AS v
  WHERE job_results.account_id = v.a AND job_results.name = v.n
  RETURNING job_results.account_id, job_results.name),
inserted AS (
  INSERT INTO job_results (account_id, name, data, content_hash, refreshed_at, updated_at)
  SELECT a, n, d, ring[1], t, t FROM u WHERE NOT EXISTS (SELECT FROM old WHERE old.account_id = u.a AND old.name = u.n)
  ON CONFLICT (account_id, name) DO UPDATE SET
    data = EXCLUDED.data,
    refreshed_at = EXCLUDED.refreshed_at,
    updated_at = CASE WHEN EXISTS (SELECT FROM u WHERE u.a = job_results.account_id AND u.n = job_results.name
                                                  AND job_results.content_hash = ANY(u.ring))
                      THEN job_results.updated_at ELSE EXCLUDED.refreshed_at END,
    content_hash = EXCLUDED.content_hash
  RETURNING account_id, name),
up AS (SELECT * FROM updated UNION ALL SELECT * FROM inserted)
SELECT up.account_id, up.name, NOT coalesce(o.content_hash = ANY(u.ring), false) AS changed, o.data AS previous
FROM up JOIN u ON u.a = up.account_id AND u.n = up.name
     LEFT JOIN old o ON o.account_id = up.account_id AND o.name = up.name
"""


async def store_many(
    conn: db.Conn, vault: Vault, items: Sequence[tuple[uuid.UUID, int, Message, dt.datetime]]
) -> list[Stored]:
    """`store` for many (account, job name) pairs, each at most once, in one statement: each sealed
    and compared exactly as `store` does. Returns what storing each found, in order."""
    if not items:
        return []
    kinds = [pii.result_kind(name) for _, name, _, _ in items]
    bodies = [data.SerializeToString(deterministic=True) for _, _, data, _ in items]
    rings = [vault.digests([body]) for body in bodies]
    rows = await conn.fetch(
        _UPSERT_MANY,
        [account for account, _, _, _ in items],
        [name for _, name, _, _ in items],
        [pii.seal(vault, kind, item[0], body) for kind, item, body in zip(kinds, items, bodies, strict=True)],
        [digest for ring in rings for digest in ring],
        [at for _, _, _, at in items],
        len(rings[0]),
    )
    found = {(r["account_id"], r["name"]): r for r in rows}  # none for an account an erasure fenced
    out = []
    for kind, (account, name, _, _) in zip(kinds, items, strict=True):
        row = found.get((account, name))
        previous = row["previous"] if row is not None else None
        if previous is not None:
            previous = pii.open_data(vault, kind, account, bytes(previous))
        out.append(Stored(row["changed"], previous) if row is not None else Stored(False))
    return out


async def store_paystubs(
    conn: db.Conn, vault: Vault, account_id: uuid.UUID, fetched: Sequence[FetchedPaystub], at: dt.datetime
) -> Stored:
    """Upserts paystubs by the platform's id, each sealed; the result row's digest covers the set."""
    items: list[tuple[str, bytes]] = []
    ids_, externals, dates, datas, documents = [], [], [], [], []
    for item in fetched:
        stub = data_pb2.Paystub()
        stub.CopyFrom(item.paystub)
        stub.ClearField("id")
        stub.ClearField("account_id")
        stub.ClearField("created_at")
        stub.ClearField("document_id")
        body = stub.SerializeToString(deterministic=True)
        items.append((item.external_id, body))
        ids_.append(ids.new_id())
        externals.append(item.external_id)
        dates.append(dt.date.fromisoformat(stub.pay_date))
        datas.append(pii.seal(vault, pii.Kind.PAYSTUB, account_id, body, item.external_id))
        documents.append(item.document_external_id)
    rows = await conn.fetch(_PAYSTUBS, account_id, ids_, externals, dates, datas, documents) if ids_ else []
    added = sorted((r for r in rows if r["inserted"]), key=lambda r: (r["pay_date"], r["id"]), reverse=True)
    bodies = dict(items)
    # Only the set's content matters for updated_at, not the order the platform listed it in.
    digests = vault.digests(pii.set_parts(items))
    row = await conn.fetchrow(_UPSERT, account_id, common_pb2.JOB_NAME_PAYSTUBS, None, digests, at)
    if row is None:  # fenced by an erasure
        return Stored(False)
    return Stored(row["changed"], None, tuple(paystub_of(bodies[r["external_id"]], r) for r in added))


def paystub_of(body: bytes, row: asyncpg.Record) -> data_pb2.Paystub:
    stub = data_pb2.Paystub.FromString(body)
    stub.id = str(row["id"])
    stub.account_id = str(row["account_id"])
    stub.document_id = str(row["document_id"]) if row["document_id"] else ""
    timeutil.set_ts(stub.created_at, row["created_at"])
    return stub


async def erase(conn: db.Executor, account_ids: list[uuid.UUID]) -> dict[str, int]:
    """Deletes every stored result and paystub of these accounts (an erasure); returns counts."""
    counts = {}
    for table in ("job_results", "paystubs"):
        status = await conn.execute(f"DELETE FROM {table} WHERE account_id = ANY($1::uuid[])", account_ids)
        counts[table] = int(status.rsplit(" ", 1)[-1])
    return counts


# --- Sets of records kept elsewhere (shifts, tax forms: records_store.py; documents.py) -----

# The set's row updated, or inserted when there is none: the fence fires once (as `_UPSERT`).
_MARK_CHANGE = """
  refreshed_at = {new}.refreshed_at,
  updated_at = CASE WHEN job_results.content_hash = ANY($3::bytea[])
                    THEN job_results.updated_at ELSE {new}.refreshed_at END,
  content_hash = {new}.content_hash"""
_MARK = f"""
WITH v AS (SELECT ($3::bytea[])[1] AS content_hash, $4::timestamptz AS refreshed_at),
updated AS (
  UPDATE job_results SET {_MARK_CHANGE.format(new="v")} FROM v WHERE account_id = $1 AND name = $2)
INSERT INTO job_results (account_id, name, data, content_hash, refreshed_at, updated_at)
SELECT $1, $2, NULL, content_hash, refreshed_at, refreshed_at FROM v
WHERE NOT EXISTS (SELECT FROM job_results r WHERE r.account_id = $1 AND r.name = $2)
ON CONFLICT (account_id, name) DO UPDATE SET {_MARK_CHANGE.format(new="EXCLUDED")}
"""


async def mark_set(
    conn: db.Conn, vault: Vault, account_id: uuid.UUID, name: int, parts: Sequence[bytes], at: dt.datetime
) -> None:
    """Moves the refreshed_at of a set of records stored elsewhere, and its updated_at when the
    set's keyed digest (of `parts`, in any order) changed."""
    await conn.execute(_MARK, account_id, name, vault.digests(sorted(parts)), at)


# --- Sealing rows stored before sealing; re-sealing and re-keying after a rotation ---------------

_RESULTS_PAGE = """
SELECT account_id, name, data, content_hash FROM job_results
WHERE data IS NOT NULL AND ($1::uuid IS NULL OR (account_id, name) > ($1, $2))
ORDER BY account_id, name LIMIT $3
"""
_RESULT_CAS = """
UPDATE job_results SET data = $3, content_hash = $4
WHERE account_id = $1 AND name = $2 AND data = $5 AND content_hash = $6
"""
_DIGEST_CAS = """
UPDATE job_results SET content_hash = $3 WHERE account_id = $1 AND name = $2 AND content_hash = $4
"""


async def seal_existing(pool: db.Pool, vault: Vault, batch: int) -> dict[str, int]:
    """`job_results.data`: seals plain values and re-seals those under an older key, online, in
    batches, each update a compare-and-set on what was read (a concurrent writer wins); re-keys
    their digests under the primary key. Returns how many values changed."""
    done = 0
    last: tuple[uuid.UUID | None, int] = (None, 0)
    while rows := await pool.fetch(_RESULTS_PAGE, *last, batch):
        last = (rows[-1]["account_id"], rows[-1]["name"])
        for row in rows:
            stored, old_digest = bytes(row["data"]), bytes(row["content_hash"])
            kind = pii.result_kind(row["name"])
            body, new = pii.resealed(vault, kind, row["account_id"], stored)
            digest = vault.digest([body])
            if new is None and digest == old_digest:
                continue
            status = await pool.execute(
                _RESULT_CAS, row["account_id"], row["name"], new or stored, digest, stored, old_digest
            )
            done += status.endswith(" 1")
    return {sealed.RESULT_DATA.name: done}


async def set_digest(conn: db.Executor, account_id: uuid.UUID, name: int) -> bytes | None:
    """The stored digest of a job's data (read before the records it covers: `rekey_set_digest`)."""
    old = await conn.fetchval(
        "SELECT content_hash FROM job_results WHERE account_id = $1 AND name = $2", account_id, name
    )
    return None if old is None else bytes(old)


async def rekey_set_digest(
    conn: db.Executor,
    vault: Vault,
    account_id: uuid.UUID,
    name: int,
    parts: Sequence[bytes],
    old: bytes | None,
) -> int:
    """Re-computes the digest of a set of records under the primary key, a compare-and-set on `old`
    (read before the records, so a writer that stored a new set since wins); 1 when it changed it."""
    digest = vault.digest(sorted(parts))
    if old is None or old == digest:
        return 0
    status = await conn.execute(_DIGEST_CAS, account_id, name, digest, old)
    return 1 if status.endswith(" 1") else 0


_PAYSTUB_CAS = "UPDATE paystubs SET data = $3 WHERE id = $1 AND account_id = $2 AND data = $4"


async def seal_existing_paystubs(pool: db.Pool, vault: Vault, batch: int) -> dict[str, int]:
    """`paystubs.data` like `seal_existing`, account by account, and the set's digest."""
    done = sets = 0
    last: uuid.UUID | None = None
    while accounts_ := await pool.fetch(
        "SELECT DISTINCT account_id FROM paystubs WHERE ($1::uuid IS NULL OR account_id > $1)"
        " ORDER BY account_id LIMIT $2",
        last,
        batch,
    ):
        last = accounts_[-1]["account_id"]
        for account in accounts_:
            account_id = account["account_id"]
            async with pool.acquire() as conn:
                old = await set_digest(conn, account_id, common_pb2.JOB_NAME_PAYSTUBS)
                rows = await conn.fetch(
                    "SELECT id, external_id, data FROM paystubs WHERE account_id = $1", account_id
                )
                items = []
                for row in rows:
                    stored = bytes(row["data"])
                    body, new = pii.resealed(vault, pii.Kind.PAYSTUB, account_id, stored, row["external_id"])
                    items.append((row["external_id"], body))
                    if new is not None:
                        status = await conn.execute(_PAYSTUB_CAS, row["id"], account_id, new, stored)
                        done += status.endswith(" 1")
                parts = pii.set_parts(items)
                sets += await rekey_set_digest(
                    conn, vault, account_id, common_pb2.JOB_NAME_PAYSTUBS, parts, old
                )
    return {sealed.PAYSTUB_DATA.name: done, "job_results.content_hash.paystubs": sets}
