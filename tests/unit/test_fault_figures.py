"""The failure tables of docs/deployment.md and docs/reliability.md are exactly what
scripts/fault_figures.py renders from the committed docs/fault-results.json, and that file holds
exact counts: every expected event consumed (by event_id), no failed RPC, no lost change."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fault_figures", ROOT / "scripts" / "fault_figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_quote_the_committed_results() -> None:
    script = _script()
    table = script.render(json.loads(script.RESULTS.read_text()))
    assert "not measured yet" not in table
    for doc in script.DOCS:
        text = doc.read_text()
        assert script.rewrite(text, table) == text, f"run python scripts/fault_figures.py ({doc.name})"


def test_results_hold_exact_counts() -> None:
    script = _script()
    tests = json.loads(script.RESULTS.read_text())["tests"]
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
