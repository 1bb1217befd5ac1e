"""The docs quote only the one committed results file of the fault tests, docs/fault-results.json
(`make fault-results`): the failure tables of docs/deployment.md and docs/reliability.md and the
figures section of docs/reliability.md are exactly what scripts/fault_figures.py renders from it,
every fault test that records figures is in it or named as not recorded, and it holds exact counts:
every expected event consumed (by event_id), no failed RPC, no lost change."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]


def test_docs_quote_the_committed_results() -> None:
    script = load_script("scripts/fault_figures.py")
    results = json.loads(script.RESULTS.read_text())
    assert "not measured yet" not in script.render(results)
    for doc in script.DOCS:
        assert script.rendered(doc, results) == doc.read_text(), (
            f"run `make fault-results` or the script ({doc.name})"
        )


def test_every_fault_test_is_in_the_figures_or_named_as_not_recorded() -> None:
    script = load_script("scripts/fault_figures.py")
    names = script.recording_tests()
    assert "test_killed_worker_jobs_are_rescued_once" in names and len(names) >= 10
    section = script.RELIABILITY.read_text().split(script.FIGURES_BEGIN)[1]
    for name in names:
        assert f"`{name}`" in section, name


def test_one_results_file() -> None:
    """No second results file beside it (docs/reliability-results.json was merged into it)."""
    assert sorted(p.name for p in (ROOT / "docs").glob("*results*.json")) == ["fault-results.json"]


def test_results_hold_exact_counts() -> None:
    script = load_script("scripts/fault_figures.py")
    tests = {
        name: entry["figures"] for name, entry in json.loads(script.RESULTS.read_text())["tests"].items()
    }
    fleet = [script.KAFKA, script.POSTGRES, script.RELAY, script.ROLLING]
    for name in fleet:
        figures = tests[name]
        assert figures["events_expected"] == figures["events_consumed_distinct"] > 0, name
    assert tests[script.KAFKA]["published_while_two_down"] == 0
    assert tests[script.KAFKA]["failed_rpcs"] == 0
    assert tests[script.RELAY]["failed_rpcs"] == 0
    assert tests[script.ROLLING]["failed_rpcs"] == 0
    pg = tests[script.POSTGRES]
    assert set(pg["codes"]) <= {"OK", "UNAVAILABLE"}
    assert pg["acknowledged_accounts"] + pg["stored_but_unacknowledged_accounts"] == pg["stored_accounts"]
