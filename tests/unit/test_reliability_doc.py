"""docs/reliability.md quotes only the committed results of a fault-test run: its figures section is
exactly what scripts/reliability_report.py renders from docs/reliability-results.json, and every
fault test that records figures has them in that file (regenerate both with `make reliability`)."""

from __future__ import annotations

import importlib.util
import json
import pathlib
from types import ModuleType

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "reliability_report", ROOT / "scripts" / "reliability_report.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_figures_section_is_rendered_from_the_committed_results() -> None:
    script = _script()
    results = json.loads((ROOT / "docs" / "reliability-results.json").read_text())
    doc = (ROOT / "docs" / "reliability.md").read_text()
    assert script.updated(doc, script.render(results)) == doc, "run `make reliability` (or the script)"


def test_every_fault_test_is_in_the_figures_or_named_as_not_recorded() -> None:
    script = _script()
    names = script.recording_tests()
    assert "test_killed_worker_jobs_are_rescued_once" in names and len(names) >= 10
    section = (ROOT / "docs" / "reliability.md").read_text().split(script.BEGIN)[1]
    for name in names:
        assert f"`{name}`" in section, name
