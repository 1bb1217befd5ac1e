"""The relay selects batch N+1 while batch N is still in flight (service/relay.py
`_SELECT_EXCLUDING`): the unpublished rows other than those in flight, in id order — never
"after the last id sent". A row that commits late with a lower id than rows already in flight is in
the next batch, ahead of every later row (so ahead of any later row of its account)."""

from __future__ import annotations

import uuid

import asyncpg

from service import relay

_INSERT = """
INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence, payload)
VALUES (gen_random_uuid(), 't.e', 'e', $1, $2, $3, '\\x00') RETURNING id
"""


async def test_next_batch_leaves_out_rows_in_flight_and_takes_a_late_lower_id_first(
    fresh_database: str,
) -> None:
    workspace, late_account, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    conn, slow = await asyncpg.connect(fresh_database), await asyncpg.connect(fresh_database)
    try:
        # A transaction takes an outbox id and commits only after later rows were committed and sent.
        tx = slow.transaction()
        await tx.start()
        late_id = await slow.fetchval(_INSERT, workspace, late_account, 1)
        later = [await conn.fetchval(_INSERT, workspace, other, n) for n in range(1, 6)]
        assert late_id < min(later)
        first = await conn.fetch(relay._SELECT, 3)
        assert [r["id"] for r in first] == later[:3]  # the late row is not visible yet
        await tx.commit()
        in_flight = [r["id"] for r in first]
        following = await conn.fetch(relay._SELECT_EXCLUDING, 3, in_flight)
        assert [r["id"] for r in following] == [late_id, *later[3:5]]
        # Rows being marked count as in flight too: nothing in flight is selected twice.
        assert await conn.fetch(relay._SELECT_EXCLUDING, 10, in_flight + [r["id"] for r in following]) == []
    finally:
        await conn.close()
        await slow.close()
