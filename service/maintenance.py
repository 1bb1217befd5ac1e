"""Operator commands that touch stored data: vault re-encryption, event replay, job retry."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable

from service import db, documents, idempotency, kafka, queue, records_store, results, sealed
from service.config import Settings
from service.vault import Vault

# Who seals each column of personal data (its table's one writer): seals values stored before
# sealing, re-seals values under an older key, re-keys change digests. One entry per
# sealed.PERSONAL_DATA column (tests/integration/test_sealed_columns.py).
Sealer = Callable[[db.Pool, Vault, int], Awaitable[dict[str, int]]]
PERSONAL_SEALERS: dict[str, Sealer] = {
    sealed.RESULT_DATA.name: results.seal_existing,
    sealed.PAYSTUB_DATA.name: results.seal_existing_paystubs,
    sealed.SHIFT_DATA.name: records_store.seal_existing,  # shifts and tax forms
    sealed.TAX_FORM_DATA.name: records_store.seal_existing,
    sealed.DOCUMENT_CONTENT.name: documents.seal_existing,
}


async def reencrypt(pool: db.Pool, vault: Vault, batch: int = 500) -> dict[str, int]:
    """Re-seals every blob not under the primary key, online, in small batches.

    Re-sealing changes no value, only the key that seals it, so one compare-and-set per column of
    `sealed.COLUMNS` serves every table (a new sealed column cannot escape rotation): the one write
    to those tables outside their owners, declared in docs/architecture.md ("Second writers").
    Each update is conditional on the blob being unchanged, so a concurrent writer wins and its
    (already primary-key) blob is left alone.
    """
    counts: dict[str, int] = {}
    for col in sealed.COLUMNS:
        table, key, column = col.table, col.key, col.column
        done = 0
        last: object = None
        while True:
            rows = await pool.fetch(
                f"SELECT {key} AS k, {column} AS blob FROM {table} WHERE {column} IS NOT NULL"
                f" AND ($1::uuid IS NULL OR {key} > $1) ORDER BY {key} LIMIT $2",
                last,
                batch,
            )
            if not rows:
                break
            last = rows[-1]["k"]
            for row in rows:
                blob = bytes(row["blob"])
                if not vault.needs_reencrypt(blob):
                    continue
                new = vault.reseal(blob, aad=col.aad(row["k"]))
                extra = f", {col.key_id_column} = $4" if col.key_id_column else ""
                args = [row["k"], blob, new] + ([vault.key_id_of(new)] if extra else [])
                await pool.execute(
                    f"UPDATE {table} SET {column} = $3{extra} WHERE {key} = $1 AND {column} = $2", *args
                )
                done += 1
        counts[f"{table}.{column}"] = done
    counts[sealed.IDEMPOTENCY_RESPONSE] = await idempotency.reseal(pool, vault)
    # Personal data (service/pii.py): seals what was stored before sealing, re-seals under the
    # primary key, and re-keys the change digests (the documents' set digests too).
    ran: set[Sealer] = set()
    for personal in sealed.PERSONAL_DATA:
        sealer = PERSONAL_SEALERS[personal.name]
        if sealer not in ran:
            ran.add(sealer)
            counts.update(await sealer(pool, vault, min(batch, 200)))
    counts.update(await documents.rekey_set_digests(pool, vault, min(batch, 200)))
    return counts


async def replay(
    settings: Settings,
    pool: db.Pool,
    since: dt.datetime,
    topic: str | None,
    account_id: uuid.UUID | None,
    *,
    until: dt.datetime | None = None,
    batch: int = 1000,
) -> int:
    """Re-publishes outbox events created in [since, until), in outbox order, with their original ids,
    keys and headers. Reads the outbox in batches, so any range fits in memory."""
    producer = kafka.make_producer(settings)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    # Start at the first event of the range (outbox_created index), then walk ids.
    first = await pool.fetchval("SELECT min(id) FROM outbox WHERE created_at >= $1", since)
    count, last_id = 0, (first or 1) - 1
    try:
        while first is not None:
            rows = await pool.fetch(
                f"SELECT {kafka.OUTBOX_COLUMNS} FROM outbox"
                " WHERE id > $1 AND created_at >= $2 AND ($3::timestamptz IS NULL OR created_at < $3)"
                " AND ($4::text IS NULL OR topic = $4) AND ($5::uuid IS NULL OR account_id = $5)"
                " ORDER BY id LIMIT $6",
                last_id,
                since,
                until,
                topic,
                account_id,
                batch,
            )
            if not rows:
                break
            sent = [await kafka.send(producer, row) for row in rows]
            await asyncio.gather(*sent)  # every event acknowledged (acks=all) before the next batch
            count += len(rows)
            last_id = rows[-1]["id"]
    finally:
        await producer.stop()
    return count


async def retry_job(pool: db.Pool, job_id: uuid.UUID) -> str:
    """Queues a job that ended in error again; returns what happened ("queued", "not_found", or the
    status of a job that cannot be retried)."""
    async with pool.acquire() as conn, conn.transaction():
        before = await queue.retry_failed(conn, job_id)
    if before is None:
        return "not_found"
    return "queued" if before == queue.JobStatus.ERROR else before.value
