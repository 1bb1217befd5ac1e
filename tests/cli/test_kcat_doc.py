"""docs/events.md shows what `kcat -f '%h'` prints for a paylink record. This runs that exact command
(with the test run's broker and topic prefix) on a real record and checks the header names, their
order and their values against the page. kcat comes from `make tools` (Debian's package); without it
the test fails and says so."""

from __future__ import annotations

import re
import shlex
import shutil

from paylink.v1 import common_pb2 as c

from service.config import Settings
from tests.cli.util import ROOT, run
from tests.harness import Client, EventLog

DOC = ROOT / "docs" / "events.md"
COMMAND = re.compile(
    r"^kcat -C -b 127\.0\.0\.1:29092 -t paylink\.identity\.added -f 'key=%k %h\\n' -e$", re.M
)


def _documented() -> tuple[list[str], list[tuple[str, str]]]:
    """The documented command (argv) and the header pairs of its documented output line."""
    text = DOC.read_text()
    match = COMMAND.search(text)
    assert match, "docs/events.md lost its kcat -f '%h' command"
    output = re.search(r"```\n(key=\S+ \S+)\n```", text[match.end() :])
    assert output, "docs/events.md lost the output of its kcat -f '%h' command"
    headers = output.group(1).split(" ", 1)[1]
    return shlex.split(match.group(0)), [tuple(h.split("=", 1)) for h in headers.split(",")]


async def test_kcat_shows_the_documented_headers(
    client: Client, events: EventLog, settings: Settings
) -> None:
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed: run `make tools` (it installs Debian's kcat)"
    argv, documented = _documented()
    _, session = await client.connect("user_good", [c.JOB_NAME_IDENTITY])
    received = await events.wait_for(
        lambda r: r.event.account_id == session.account_id and r.event.event == "identity.added"
    )
    event = received[0].event
    argv[argv.index("127.0.0.1:29092")] = settings.kafka_bootstrap
    argv[argv.index("paylink.identity.added")] = f"{settings.topic_prefix}identity.added"
    result = await run(argv[1:], {}, within=60, program=[kcat])
    assert result.code == 0, result.err
    line = next(line for line in result.out.splitlines() if line.startswith(f"key={event.account_id} "))
    seen = [(name, value) for name, value in (h.split("=", 1) for h in line.split(" ", 1)[1].split(","))]
    assert [name for name, _ in seen] == [name for name, _ in documented]
    values = dict(seen)
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", values.pop("traceparent"))
    assert values == {
        "event-id": event.event_id,
        "event-type": "identity.added",
        "workspace-id": event.workspace_id,
        "content-type": "application/x-protobuf",
        "x-request-id": event.request_id,
    }
    assert event.request_id
