"""BENCHMARKS.md quotes the slow-logins figures only as bench/report.py renders them from the
committed bench/logins-results.json (`make bench BENCH_ARGS='--only logins'` rewrites both)."""

from __future__ import annotations

import pathlib

from tests.unit.scripts import load_script

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_slow_logins_section_is_rendered_from_the_committed_results() -> None:
    report = load_script("bench/report.py")
    doc = (ROOT / "BENCHMARKS.md").read_text()
    assert (ROOT / "bench" / "logins-results.json").exists()
    assert report.with_logins(doc) == doc, "run make bench BENCH_ARGS='--only logins'"
    assert "GetAccount during the logins, the API's own `paylink_rpc_seconds`" in doc
