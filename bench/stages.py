"""Where a pipeline job's time goes, creation to event (`bench/run.py --stages`, half load only).

Each job's milestones, all on this host's clock (PostgreSQL's and the driver's):
- created: `jobs.created_at` (the CreateJob statement's transaction start; what the pipeline's
  latency is measured from);
- answered: the driver had CreateJob's answer;
- claimed: a worker's claim set the job `running` (clock_timestamp() in the claim's statement, by a
  bench-only trigger on this benchmark's own database: `install`, `remove`);
- outcome: `jobs.completed_at` (the completer began the transaction that writes the outcome);
- committing: that transaction's COMMIT began (clock_timestamp() in a deferred constraint trigger
  on its outbox row, run at COMMIT: bench-only too);
- sent: the event's Kafka record timestamp (CreateTime, ms: the relay's producer built its record,
  after the outcome committed and a relay select read it);
- published: the job event's `outbox.published_at` (the relay's mark, after Kafka's acknowledgement);
- consumed: the driver's consumer read the event.

The triggers add one small INSERT to each claim and to each event's transaction; the runs compared
carry them alike.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import asyncpg

from bench.common import percentile

# (name, from, to): the stages a job goes through in order (queued, run, to_relay, kafka add up to
# total), and beside them: CreateJob's answer, the claim's wait after it, the relay's mark.
STAGES = (
    ("answer", "created", "answered"),
    ("queued", "created", "claimed"),
    ("queued_after_answer", "answered", "claimed"),
    ("run", "claimed", "outcome"),
    ("to_relay", "outcome", "sent"),
    ("outcome_tx", "outcome", "committing"),
    ("pickup", "committing", "sent"),
    ("kafka", "sent", "consumed"),
    ("mark", "sent", "published"),
    ("total", "created", "consumed"),
)

_INSTALL = """
CREATE UNLOGGED TABLE IF NOT EXISTS bench_job_claims (id uuid PRIMARY KEY, claimed_at timestamptz NOT NULL);
CREATE OR REPLACE FUNCTION bench_job_claimed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO bench_job_claims VALUES (NEW.id, clock_timestamp()) ON CONFLICT DO NOTHING;
  RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER bench_job_claimed AFTER UPDATE OF status ON jobs FOR EACH ROW
  WHEN (NEW.status = 'running' AND OLD.status <> 'running') EXECUTE FUNCTION bench_job_claimed();
CREATE UNLOGGED TABLE IF NOT EXISTS bench_event_commits (
  event_id uuid PRIMARY KEY, committing_at timestamptz NOT NULL);
CREATE OR REPLACE FUNCTION bench_event_committing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO bench_event_commits VALUES (NEW.event_id, clock_timestamp()) ON CONFLICT DO NOTHING;
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS bench_event_committing ON outbox;
CREATE CONSTRAINT TRIGGER bench_event_committing AFTER INSERT ON outbox DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION bench_event_committing();
"""
_REMOVE = """DROP TRIGGER IF EXISTS bench_job_claimed ON jobs;
DROP TRIGGER IF EXISTS bench_event_committing ON outbox"""
_READ = """
SELECT x.job_id::text AS id, extract(epoch FROM j.created_at)::float8 AS created,
       extract(epoch FROM b.claimed_at)::float8 AS claimed,
       extract(epoch FROM j.completed_at)::float8 AS outcome,
       extract(epoch FROM e.committing_at)::float8 AS committing,
       extract(epoch FROM o.published_at)::float8 AS published
FROM unnest($1::uuid[], $2::uuid[]) AS x(job_id, event_id)
JOIN jobs j ON j.id = x.job_id
LEFT JOIN bench_job_claims b ON b.id = x.job_id
LEFT JOIN bench_event_commits e ON e.event_id = x.event_id
LEFT JOIN outbox o ON o.event_id = x.event_id
"""


async def install(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(_INSTALL)
    finally:
        await conn.close()


async def remove(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(_REMOVE)
    finally:
        await conn.close()


async def read(
    url: str, answered: dict[str, float], consumed: dict[str, tuple[float, float, str]]
) -> list[dict[str, float]]:
    """Each job's milestones (epoch seconds), by job id: `answered`, and `consumed` (when consumed,
    the record's timestamp, the event id)."""
    ids = sorted(consumed)
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(_READ, ids, [consumed[j][2] for j in ids])
    finally:
        await conn.close()
    found = []
    for row in rows:
        job = {k: row[k] for k in ("created", "claimed", "outcome", "committing", "published")}
        if any(v is None for v in job.values()):
            continue  # not claimed while the trigger was there (cannot happen in a half-load run)
        done, sent, _ = consumed[row["id"]]
        found.append({**job, "answered": answered[row["id"]], "sent": sent, "consumed": done})
    return found


def summarize(jobs: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Per stage, p50 / p99 / mean in ms over every job, and the mean over the slowest 1 % of jobs
    (by total): which stage makes the p99."""
    if not jobs:
        return {"jobs": 0}
    slowest = sorted(jobs, key=lambda j: j["consumed"] - j["created"])[-max(1, len(jobs) // 100) :]
    out: dict[str, Any] = {"jobs": len(jobs), "slowest": len(slowest)}
    for name, start, end in STAGES:
        ms = sorted((j[end] - j[start]) * 1000 for j in jobs)
        out[name] = {
            "p50_ms": round(percentile(ms, 50), 1),
            "p99_ms": round(percentile(ms, 99), 1),
            "mean_ms": round(statistics.mean(ms), 1),
            "slowest_1pct_mean_ms": round(statistics.mean((j[end] - j[start]) * 1000 for j in slowest), 1),
        }
    return out


def line(found: dict[str, Any]) -> str:
    """One printed line: each stage's p50 / p99, and its mean over the slowest 1 %."""
    if not found.get("jobs"):
        return "stages: none"
    parts = [
        f"{name} {found[name]['p50_ms']:.0f}/{found[name]['p99_ms']:.0f} ({found[name]['slowest_1pct_mean_ms']:.0f})"
        for name, _, _ in STAGES
    ]
    return f"stages ms p50/p99 (slowest 1 % mean), {found['jobs']} jobs: " + ", ".join(parts)
