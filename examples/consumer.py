"""An example paylink event consumer: the patterns every consumer needs, in one small file.

    python examples/consumer.py                          # every paylink.* topic, group example-consumer
    python examples/consumer.py --topics paylink.identity.added paylink.link_session.completed
    python examples/consumer.py --max-events 10 --timeout 5

What it shows (see docs/events.md):
- decode the value with the generated class `paylink.v1.Event` (content-type application/x-protobuf);
- de-duplicate by `event_id`: delivery is at least once and `events replay` re-sends on purpose.
  Here an in-memory LRU set; a real consumer records handled event_ids in its own database in the
  same transaction as its side effects (e.g. a table with a UNIQUE event_id column), so a restart
  or a second instance does not handle an event twice;
- check the per-account `sequence` (1, 2, 3... across all topics of one account) and report holes.
  Kafka orders one account's events per topic, not across topics, so a later sequence may arrive
  before an earlier one from another topic: a hole is only reported if it is still open at the end;
- commit offsets only after the batch is handled (enable_auto_commit=False): a crash re-reads, it
  never skips.

Prints one line per handled event:
    event <event_id> <event> account=<account_id> seq=<n> topic=<topic> partition=<p> offset=<o> <details>
and `duplicate <event_id> ...` for a redelivery it skipped, then a summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import pathlib
import re
import signal
import sys
import time

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

try:
    from paylink.v1 import common_pb2, event_pb2
except ImportError:  # run from a checkout: use the generated classes in generated/
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "generated"))
    from paylink.v1 import common_pb2, event_pb2


class SeenEvents:
    """The last `size` event_ids handled (an LRU set)."""

    def __init__(self, size: int = 100_000) -> None:
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._size = size

    def add(self, event_id: str) -> bool:
        """True the first time an id is seen, False for a duplicate."""
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


class Sequences:
    """Per-account sequence numbers seen, to find holes between the lowest and highest."""

    def __init__(self) -> None:
        self._seen: dict[str, set[int]] = collections.defaultdict(set)

    def add(self, account_id: str, sequence: int) -> None:
        self._seen[account_id].add(sequence)

    def holes(self) -> dict[str, list[int]]:
        out = {}
        for account_id, seen in self._seen.items():
            missing = sorted(set(range(min(seen), max(seen) + 1)) - seen)
            if missing:
                out[account_id] = missing
        return out


def details(event: event_pb2.Event) -> str:
    """A short, human description of the payload."""
    kind = event.WhichOneof("payload")
    if kind == "job":
        job = event.job
        text = f"job={job.job_id} outcome={common_pb2.JobOutcome.Name(job.outcome)}"
        if job.error_code:
            text += f" error_code={common_pb2.JobErrorCode.Name(job.error_code)}"
        return text
    if kind == "account_added":
        return f"platform={event.account_added.platform_id} end_user={event.account_added.end_user_id}"
    if kind == "monitoring_status_updated":
        update = event.monitoring_status_updated
        status = common_pb2.MonitoringStatus.Name(update.monitoring_status)
        return f"monitoring_status={status} reason={update.reason}"
    if kind == "link_session_completed":
        jobs = " ".join(
            f"{common_pb2.JobName.Name(j.name)}={common_pb2.JobOutcome.Name(j.outcome)}"
            for j in event.link_session_completed.jobs
        )
        return f"jobs=[{jobs}]"
    return ""


class Consumer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.seen = SeenEvents()
        self.sequences = Sequences()
        self.handled = 0
        self.duplicates = 0
        self.stopping = asyncio.Event()

    def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Your business logic goes here. It must be idempotent per event_id or guarded like this."""
        headers = {key: value.decode() for key, value in record.headers}
        if headers.get("content-type") != "application/x-protobuf":
            print(
                f"skip topic={record.topic} offset={record.offset}: content-type {headers.get('content-type')}"
            )
            return
        event = event_pb2.Event.FromString(record.value or b"")
        where = f"topic={record.topic} partition={record.partition} offset={record.offset}"
        if not self.seen.add(event.event_id):
            self.duplicates += 1
            print(f"duplicate {event.event_id} {event.event} account={event.account_id} {where}")
            return
        self.sequences.add(event.account_id, event.sequence)
        self.handled += 1
        print(
            f"event {event.event_id} {event.event} account={event.account_id} seq={event.sequence} {where}"
            f" {details(event)}".rstrip()
        )

    async def run(self) -> int:
        args = self.args
        consumer = AIOKafkaConsumer(
            bootstrap_servers=args.bootstrap,
            group_id=args.group,
            enable_auto_commit=False,  # commit only what was handled
            auto_offset_reset="earliest",  # a new group starts at the beginning of each topic
            metadata_max_age_ms=5000,  # notice new topics under the pattern within seconds
        )
        await consumer.start()
        try:
            if args.topics:
                consumer.subscribe(topics=args.topics)
            else:
                consumer.subscribe(pattern="^" + re.escape(args.prefix) + ".*")
            idle_since: float | None = None
            while not self.stopping.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                handled: dict[TopicPartition, int] = {}  # next offset to read, per partition
                for partition, records in batch.items():
                    for record in records:
                        if args.max_events and self.handled >= args.max_events:
                            break
                        self.handle(record)
                        handled[partition] = record.offset + 1
                if handled:
                    # Only after handling, and only what was handled: a crash re-reads, never skips.
                    await consumer.commit(handled)
                if batch:
                    idle_since = None
                elif consumer.assignment():  # joined and assigned, nothing new
                    idle_since = idle_since or time.monotonic()
                if args.max_events and self.handled >= args.max_events:
                    break
                if args.timeout and idle_since and time.monotonic() - idle_since >= args.timeout:
                    break
        finally:
            await stop(consumer)
        holes = self.sequences.holes()
        gaps = "; ".join(f"{account} missing {missing}" for account, missing in holes.items()) or "none"
        print(
            f"done: handled {self.handled} events, skipped {self.duplicates} duplicates, sequence gaps: {gaps}"
        )
        return 0


async def stop(consumer: AIOKafkaConsumer) -> None:
    """`consumer.stop()`, past aiokafka's close race (aio-libs/aiokafka#647): a fetch that was
    waiting to retry after a broker timeout re-raises its own cancellation out of `stop()`. That
    CancelledError is not ours (the offsets handled were committed already): only a task that is
    itself being cancelled lets it through; what the interrupted close left, `asyncio.run` cancels
    as the example exits."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("PAYLINK_KAFKA_BOOTSTRAP", "127.0.0.1:29092"),
        help="Kafka bootstrap servers (default: $PAYLINK_KAFKA_BOOTSTRAP or 127.0.0.1:29092)",
    )
    parser.add_argument(
        "--prefix",
        default=os.environ.get("PAYLINK_TOPIC_PREFIX", "paylink."),
        help="subscribe to every topic starting with this (default: $PAYLINK_TOPIC_PREFIX or paylink.)",
    )
    parser.add_argument("--topics", nargs="+", help="subscribe to these topics instead of the prefix")
    parser.add_argument(
        "--group", default="example-consumer", help="consumer group id (offsets are per group)"
    )
    parser.add_argument("--max-events", type=int, default=0, help="stop after handling this many events")
    parser.add_argument(
        "--timeout", type=float, default=0, help="stop after this many seconds without a new message"
    )
    args = parser.parse_args()
    consumer = Consumer(args)

    async def run() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, consumer.stopping.set)
        return await consumer.run()

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
