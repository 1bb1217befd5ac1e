"""docs/reliability.md quotes only the committed results of a fault-test run: its figures section is
exactly what scripts/reliability_report.py renders from docs/reliability-results.json, and every
fault test that records figures has them in that file (regenerate both with `make reliability`)."""

from __future__ import annotations

import ast
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


def _recording_tests() -> set[str]:
    """Fault test functions that take the `figures` fixture."""
    names = set()
    for path in (ROOT / "tests" / "faults").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            is_test = isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef) and node.name.startswith(
                "test_"
            )
            if is_test and "figures" in {a.arg for a in node.args.args}:
                names.add(node.name)
    return names


def test_every_fault_test_has_figures_in_the_results() -> None:
    results = json.loads((ROOT / "docs" / "reliability-results.json").read_text())
    recorded = {name.split("[")[0] for name in results["tests"]}
    assert _recording_tests() <= recorded, sorted(_recording_tests() - recorded)
