"""examples/consumer.py against the real broker: it decodes every event of a flow, prints each
event_id once although the events were replayed (duplicates in Kafka), finds no sequence gap, and
commits its offsets (a second run of the same group reads nothing new)."""

from __future__ import annotations

import datetime as dt
import re
import sys
import uuid

from paylink.v1 import common_pb2 as c

from service.config import Settings
from tests.cli.util import ROOT, run, service_env
from tests.harness import Client, EventLog

CONSUMER = [sys.executable, str(ROOT / "examples" / "consumer.py")]
EVENT_LINE = re.compile(r"^event (\S+) (\S+) account=(\S+) seq=(\d+) topic=(\S+) partition=\d+ offset=\d+")


async def test_example_consumer_decodes_deduplicates_and_commits(
    client: Client, events: EventLog, settings: Settings
) -> None:
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)).isoformat()
    _, session = await client.connect("user_good", [c.JOB_NAME_IDENTITY])
    account_id = session.account_id
    await events.settled(account_id)
    expected = {r.event.event_id: r.event for r in events.for_account(account_id)}
    assert [e.event for e in sorted(expected.values(), key=lambda e: e.sequence)] == [
        "account.added",
        "identity.added",
        "link_session.completed",
    ]
    env = service_env(settings)
    # Put every event of the account into Kafka a second time: the consumer must skip the copies.
    replayed = await run(["events", "replay", "--since", since, "--account", account_id], env)
    assert replayed.out.strip() == f"replayed {len(expected)} events", replayed.err
    await events.wait_for(lambda r: r.event.account_id == account_id, count=2 * len(expected))

    group = f"example-{uuid.uuid4().hex[:8]}"
    args = ["--bootstrap", settings.kafka_bootstrap, "--prefix", settings.topic_prefix, "--group", group]
    first = await run([*args, "--timeout", "3"], env, within=90, program=CONSUMER)
    assert first.code == 0, first.err
    lines = first.out.splitlines()
    handled = [m.groups() for m in map(EVENT_LINE.match, lines) if m]
    mine = [h for h in handled if h[2] == account_id]
    # Each event of the account printed exactly once, decoded (name, sequence, topic) correctly.
    assert sorted(h[0] for h in mine) == sorted(expected)
    for event_id, name, _, sequence, topic in mine:
        assert name == expected[event_id].event and int(sequence) == expected[event_id].sequence
        assert topic == settings.topic_prefix + name
    assert len({h[0] for h in handled}) == len(handled)  # no event_id printed twice, whoever's
    skipped = [line for line in lines if line.startswith("duplicate ") and f"account={account_id}" in line]
    assert len(skipped) == len(expected)
    summary = lines[-1]
    assert summary.startswith(f"done: handled {len(handled)} events, skipped ")
    assert summary.endswith("sequence gaps: none")
    identity_line = next(
        line
        for line in lines
        if line.startswith("event ") and " identity.added " in line and f"account={account_id}" in line
    )
    assert "outcome=JOB_OUTCOME_SUCCESS" in identity_line

    # Offsets were committed after handling: the same group starts where it left off.
    second = await run([*args, "--timeout", "2"], env, within=60, program=CONSUMER)
    assert second.code == 0, second.err
    assert not [line for line in second.out.splitlines() if f"account={account_id}" in line]

    # --max-events stops early and commits only what it handled.
    other = f"example-{uuid.uuid4().hex[:8]}"
    limited = await run(
        [*args[:-1], other, "--max-events", "2", "--timeout", "10"], env, within=60, program=CONSUMER
    )
    assert limited.code == 0, limited.err
    assert len([line for line in limited.out.splitlines() if line.startswith("event ")]) == 2
    assert limited.out.splitlines()[-1].startswith("done: handled 2 events")
