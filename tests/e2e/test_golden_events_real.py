"""The golden events are what the publishing code produces: the story of tests/golden_story.py is
told against the test run's server, and what Kafka received for the account, with fixed ids and
times, must be the committed docs/golden-events/ byte for byte. A change to the real events fails
here until `scripts/golden_events.py` rewrites the files (and the change is reviewed in them)."""

from __future__ import annotations

import pathlib

from service import runtime
from tests import golden_story
from tests.harness import Client, EventLog

GOLDEN = pathlib.Path(__file__).resolve().parents[2] / "docs" / "golden-events"


async def test_golden_events_are_the_real_events(
    client: Client, events: EventLog, app: runtime.Running
) -> None:
    story = await golden_story.tell(client, events, app.deps.pool)
    rendered = golden_story.render(story)
    committed = {p.name: p.read_bytes() for p in GOLDEN.iterdir() if p.suffix in (".bin", ".json")}
    assert sorted(rendered) == sorted(committed), "run scripts/golden_events.py"
    for name, data in rendered.items():
        assert data == committed[name], f"{name} differs from the real event: run scripts/golden_events.py"
