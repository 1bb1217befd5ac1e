"""What the outbox's triggers cost the relay's mark (migration 0176), alternated in one run.

On a fresh database (the local stack's cluster by default), each round writes `rows` events with
their pending rows, as service/outbox.py does, then marks them all published in batches of
`batch` ids with the relay's own statement (`outbox.mark_published`) on a connection of this release
(application_name `paylink`, its schema): what the relay does. Rounds rotate the outbox's UPDATE
triggers between
- `0175`: migration 0175's trigger (INSERT OR UPDATE OF published_at, WHEN the session says a schema
  before 0175): main before 0176;
- `0176`: migration 0176's (0175's for INSERT, and the mark's trigger for any session that does not
  say `paylink.keeps_outbox_pending` = on, as this release's connections do);
- `none`: no trigger on UPDATE (the floor: what the WHEN clauses cost at all).
Measured per marked event: the PostgreSQL backend's CPU time (utime + stime of its process, read
from /proc: the server must run on this host) and the wall time of the marks. Medians per variant.

    .venv/bin/python bench/relay_mark_trigger.py [--rows 100000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import sys
import time
import uuid

sys.path[:0] = [str(pathlib.Path(__file__).resolve().parent.parent)]

from service import db, outbox
from tests.harness import base_settings, new_database

_TRIGGER_0175 = """
DROP TRIGGER IF EXISTS outbox_pending_follow_mark ON outbox;
CREATE OR REPLACE TRIGGER outbox_pending_follow_previous_release
    AFTER INSERT OR UPDATE OF published_at ON outbox
    FOR EACH ROW WHEN (lpad(coalesce(current_setting('paylink.schema', true), ''), 9, '0') COLLATE "C" < '000000175')
    EXECUTE FUNCTION outbox_pending_follow_previous_release();
"""
_TRIGGER_0176 = (pathlib.Path(__file__).resolve().parent.parent / "migrations").joinpath(
    "0176_outbox_pending_follows_any_mark.sql"
)
_NONE = """
DROP TRIGGER IF EXISTS outbox_pending_follow_mark ON outbox;
CREATE OR REPLACE TRIGGER outbox_pending_follow_previous_release
    AFTER INSERT ON outbox
    FOR EACH ROW WHEN (lpad(coalesce(current_setting('paylink.schema', true), ''), 9, '0') COLLATE "C" < '000000175')
    EXECUTE FUNCTION outbox_pending_follow_previous_release();
"""
_FILL = """
WITH rows AS (
  INSERT INTO outbox (event_id, topic, event_type, workspace_id, account_id, sequence, payload)
  SELECT gen_random_uuid(), 'bench.x', 'x', $1, ($2::uuid[])[1 + i % 1000], 1 + i / 1000, $3
  FROM generate_series(0, $4 - 1) AS i ORDER BY i RETURNING id, created_at)
INSERT INTO outbox_pending (id, created_at) SELECT id, created_at FROM rows
"""
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15)


async def _round(conn: db.Conn, variant: str, rows: int, batch: int) -> dict[str, float]:
    await conn.execute("TRUNCATE outbox, outbox_pending")
    await conn.execute(
        _TRIGGER_0176.read_text() if variant == "0176" else _TRIGGER_0175 if variant == "0175" else _NONE
    )
    await conn.execute(_FILL, uuid.uuid4(), [uuid.uuid4() for _ in range(1000)], os.urandom(400), rows)
    await conn.execute("VACUUM ANALYZE outbox")
    await conn.execute("VACUUM ANALYZE outbox_pending")
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM outbox_pending ORDER BY id")]
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    cpu, wall = _cpu_seconds(pid), time.perf_counter()
    for start in range(0, len(ids), batch):
        await outbox.mark_published(conn, ids[start : start + batch])
    cpu, wall = _cpu_seconds(pid) - cpu, time.perf_counter() - wall
    assert not await conn.fetchval("SELECT count(*) FROM outbox_pending")
    return {"cpu_us_per_event": cpu / rows * 1e6, "wall_us_per_event": wall / rows * 1e6}


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500, help="ids per mark (PAYLINK_RELAY_BATCH_SIZE)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each variant, rotated")
    args = parser.parse_args()
    variants = ["0175", "0176", "none"]
    found: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    loads: list[float] = []
    async with new_database() as url:
        conn = await db.connect(url)
        try:
            assert await conn.fetchval("SHOW application_name") == "paylink"
            for n in range(args.rounds):
                for variant in variants[n % 3 :] + variants[: n % 3]:
                    loads.append(os.getloadavg()[0])
                    found[variant].append(await _round(conn, variant, args.rows, args.batch))
                    print(variant, found[variant][-1], f"load {loads[-1]:.1f}", flush=True)
        finally:
            await conn.close()
    summary = {
        v: {k: statistics.median(r[k] for r in found[v]) for k in found[v][0]} | {"rounds": found[v]}
        for v in variants
    }
    print(
        json.dumps(
            {
                "rows": args.rows,
                "batch": args.batch,
                "database": base_settings().database_url.rsplit("@", 1)[-1],
                "load": [min(loads), max(loads)],
                "median": summary,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
