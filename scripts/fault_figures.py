#!/usr/bin/env python3
"""Writes the failure table of docs/deployment.md and docs/reliability.md from the committed results
file docs/fault-results.json, so the figures the docs quote are the ones the fault tests measured.

    make fault-results                    # runs the fleet fault tests, then this script
    python scripts/fault_figures.py       # rewrite the tables from docs/fault-results.json
    python scripts/fault_figures.py --check   # exit 1 if a doc's table differs (tests/unit checks it)

The table sits between `<!-- fault-figures:begin -->` and `<!-- fault-figures:end -->` in each doc.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "fault-results.json"
DOCS = [ROOT / "docs" / "deployment.md", ROOT / "docs" / "reliability.md"]
BEGIN = "<!-- fault-figures:begin -->"
END = "<!-- fault-figures:end -->"

KAFKA = "test_leader_killed_then_two_brokers_down_nothing_lost"
POSTGRES = "test_primary_crash_promote_standby_nothing_acknowledged_lost"
RELAY = "test_leading_relay_killed_standby_takes_over"
ROLLING = "test_rolling_restart_under_load_no_failed_rpc"

# (test, failure, what paylink does, measured (format string over the test's figures), proved by)
ROWS: list[tuple[str, str, str, str, str]] = [
    (
        KAFKA,
        "The broker leading the busiest partitions dies (SIGKILL), 1 of 3",
        "The relay's batch is not acknowledged; it builds a new producer and resends the unmarked rows"
        " once the controller has fenced the broker and moved its leaders. RPCs are not affected.",
        "Publishing stalled {publish_stall_seconds} s (the broker session timeout, 9 s by default)."
        " It led {partitions_it_led} of {partitions} partitions.",
        "`test_kafka_cluster.py::" + KAFKA + "` (phase 1)",
    ),
    (
        KAFKA,
        "A second broker dies: 1 of 3 left",
        "Nothing can be acknowledged (`acks=all`, `min.insync.replicas=2`), so nothing is published"
        " and events wait in the outbox. RPCs go on succeeding. When a broker is back, the outbox"
        " drains.",
        "{outbox_backlog} events waited, {published_while_two_down} published; {rpcs_ok_while_two_down}"
        " RPCs succeeded and {failed_rpcs} failed while two were down. Everything was published"
        " {seconds_to_drain_after_node_back} s after the broker restart began (the restart itself took"
        " {node_restart_seconds} s). Whole run: {events_expected} events in the outbox,"
        " {events_consumed_distinct} distinct event_ids in Kafka, {redelivered} redelivered, order per"
        " account kept.",
        "`test_kafka_cluster.py::" + KAFKA + "` (phases 2-3)",
    ),
    (
        POSTGRES,
        "The PostgreSQL primary crashes (`pg_ctl stop -m immediate`); the standby is promoted",
        "RPCs answer UNAVAILABLE while no host accepts writes, and OK again once the standby is"
        " promoted. The multi-host DSN (`target_session_attrs=read-write`) finds the new primary, with"
        " no restart. Synchronous replication: an acknowledged change is on the standby.",
        "First OK {seconds_promoted_to_first_ok} s after the promotion ({seconds_crash_to_first_ok} s"
        " after the crash; {seconds_without_primary} s without a primary). Answers: {codes}."
        " {acknowledged_accounts} acknowledged linked accounts, all stored ({stored_accounts} stored;"
        " the others' calls answered UNAVAILABLE). {events_expected} events, {events_consumed_distinct}"
        " distinct in Kafka. {processes_restarted} processes restarted.",
        "`test_postgres_failover.py`",
    ),
    (
        RELAY,
        "The leading relay dies (SIGKILL) mid-stream; 2 api, 2 worker, 2 relay running",
        "Its leader lock (a session advisory lock) goes with its connection. The standby relay takes"
        " it at its next poll and publishes the unmarked rows again (at least once, same event_id).",
        "The standby published {seconds_kill_to_standby_publishing} s after the kill (poll"
        " {relay_poll_seconds} s). {failed_rpcs} failed RPCs; {events_expected} events,"
        " {events_consumed_distinct} distinct in Kafka, {redelivered} redelivered.",
        "`test_fleet.py::" + RELAY + "`",
    ),
    (
        ROLLING,
        "Rolling restart: SIGTERM to each of the 6 processes in turn, under load",
        "An api reports NOT_SERVING and keeps serving for `PAYLINK_SHUTDOWN_DRAIN_SECONDS`. Clients"
        " that watch health move to the other api. Then in-flight calls drain. Workers release jobs."
        " The relay flushes and its standby takes over.",
        "{rpcs} RPCs, {failed_rpcs} failed, with the published retry policy and a"
        " {shutdown_drain_seconds} s drain. The slowest process exit took"
        " {slowest_sigterm_exit_seconds} s. {events_expected} events, {events_consumed_distinct}"
        " distinct in Kafka.",
        "`test_fleet.py::" + ROLLING + "`",
    ),
]


def _codes(value: Any) -> Any:
    if isinstance(value, dict):
        return ", ".join(f"{count} {code}" for code, count in sorted(value.items(), key=lambda kv: -kv[1]))
    return value


def render(results: dict[str, Any]) -> str:
    tests = results.get("tests", {})
    lines = [
        BEGIN,
        f"Measured by `make fault-results` on {results.get('machine', '?')}, last updated"
        f" {results.get('updated', '?')} (file `docs/fault-results.json`).",
        "",
        "| failure | what paylink does | measured | proved by |",
        "|---|---|---|---|",
    ]
    for test, failure, behaviour, measured, proof in ROWS:
        figures = tests.get(test)
        text = (
            measured.format(**{k: _codes(v) for k, v in figures.items()})
            if figures
            else "not measured yet: run `make fault-results`"
        )
        lines.append(f"| {failure} | {behaviour} | {text} | {proof} |")
    lines.append(END)
    return "\n".join(lines)


def rewrite(doc: str, table: str) -> str:
    start, end = doc.index(BEGIN), doc.index(END) + len(END)
    return doc[:start] + table + doc[end:]


def main(argv: list[str]) -> int:
    table = render(json.loads(RESULTS.read_text()))
    stale = []
    for path in DOCS:
        text = path.read_text()
        new = rewrite(text, table)
        if new != text:
            if "--check" in argv:
                stale.append(path.name)
            else:
                path.write_text(new)
                print(f"updated {path.relative_to(ROOT)}")
    if stale:
        print(f"stale figures in {', '.join(stale)}: run python scripts/fault_figures.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
