"""Writes docs/golden-events/ from real events: starts paylink in this process (API, worker, relay)
on a fresh database of the local stack (`make up`), tells one account's story through the gRPC API,
and writes what the relay published to Kafka for that account, with fixed ids and times
(tests/golden_story.py). <name>.bin is the message value; <name>.json the topic, key and headers,
the value in base64 and hex, and the Event as proto3 JSON.

    eval "$(scripts/stack.sh env)" && .venv/bin/python scripts/golden_events.py           # rewrite
    eval "$(scripts/stack.sh env)" && .venv/bin/python scripts/golden_events.py --check   # exit 1 if stale

tests/e2e/test_golden_events_real.py runs the same story in `make test` and fails when the real
events drift from the committed files.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "generated")]

import grpc  # noqa: E402

from service import auth, runtime  # noqa: E402
from tests import golden_story  # noqa: E402
from tests.harness import Client, EventLog, base_settings, create_test_database, drop_database  # noqa: E402

OUT = ROOT / "docs" / "golden-events"


async def files() -> dict[str, bytes]:
    base = base_settings()
    url = await create_test_database(base.database_url)
    settings = base.model_copy(
        update={"database_url": url, "topic_prefix": f"golden{uuid.uuid4().hex[:8]}.", "grpc_port": 0}
    )
    running = await runtime.start(settings)
    events = EventLog(settings.kafka_bootstrap, settings.topic_prefix)
    await events.start()
    try:
        assert running.api is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.api.port}") as channel:
            _, secret = await auth.create_workspace(running.deps.pool, "golden")
            story = await golden_story.tell(Client(channel, secret), events, running.deps.pool)
        return golden_story.render(story)
    finally:
        await events.stop()
        await running.stop()
        await drop_database(base.database_url, url)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead")
    args = parser.parse_args()
    rendered = asyncio.run(files())
    committed = {p.name: p.read_bytes() for p in OUT.iterdir() if p.suffix in (".bin", ".json")}
    if args.check:
        if committed != rendered:
            stale = sorted(
                set(committed) ^ set(rendered) | {n for n in rendered if committed.get(n) != rendered[n]}
            )
            print(f"docs/golden-events is stale: {stale}; run scripts/golden_events.py", file=sys.stderr)
            return 1
        print("docs/golden-events is current")
        return 0
    for name in set(committed) - set(rendered):
        (OUT / name).unlink()
    for name, data in rendered.items():
        (OUT / name).write_bytes(data)
    print(f"wrote {len(rendered)} files to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
