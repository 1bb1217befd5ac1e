"""BENCHMARKS.md quotes the slow-logins figures only as bench/report.py renders them from the
committed bench/logins-results.json (`make bench BENCH_ARGS='--only logins'` rewrites both)."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_slow_logins_section_is_rendered_from_the_committed_results() -> None:
    report = _report()
    doc = (ROOT / "BENCHMARKS.md").read_text()
    assert (ROOT / "bench" / "logins-results.json").exists()
    assert report.with_logins(doc) == doc, "run make bench BENCH_ARGS='--only logins'"
    assert "GetAccount during the logins, the API's own `paylink_rpc_seconds`" in doc
