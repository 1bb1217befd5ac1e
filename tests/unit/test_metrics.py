"""The RPC latency histogram (service/metrics.LoopHistogram) is exposed exactly as prometheus_client's
Histogram would expose the same observations (its `_created` aside)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from service import metrics

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# On a bound, between bounds, below the first, above the last: each lands where Histogram puts it.
VALUES = (0.0, 0.0004, 0.001, 0.0011, 0.0025, 0.003, 0.02, 0.7, 5, 9.99, 10, 10.01, 1234.5)


def _lines(text: str, name: str) -> list[str]:
    return sorted(line for line in text.splitlines() if name in line and "_created" not in line)


def test_exposition_matches_prometheus_clients_histogram() -> None:
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "hist_under_test", "doc", ["method", "code"], buckets=BUCKETS, registry=reference_registry
    )
    mine_registry = CollectorRegistry()
    mine = metrics.LoopHistogram(
        "hist_under_test", "doc", ["method", "code"], BUCKETS, registry=mine_registry
    )
    for i, value in enumerate(VALUES):
        labels = ("GetAccount", "OK") if i % 3 else ("CreateLinkToken", "INVALID_ARGUMENT")
        reference.labels(*labels).observe(value)
        mine.labels(*labels).observe(value)
    expected = _lines(generate_latest(reference_registry).decode(), "hist_under_test")
    assert expected and _lines(generate_latest(mine_registry).decode(), "hist_under_test") == expected


def test_the_rpc_histogram_is_registered_and_checks_its_labels() -> None:
    before = _lines(generate_latest().decode(), 'paylink_rpc_seconds_count{code="OK",method="UnitProbe"}')
    metrics.RPC_LATENCY.labels("UnitProbe", "OK").observe(0.002)
    after = _lines(generate_latest().decode(), 'paylink_rpc_seconds_count{code="OK",method="UnitProbe"}')
    assert before == [] and after == ['paylink_rpc_seconds_count{code="OK",method="UnitProbe"} 1.0']
    with pytest.raises(ValueError, match="expected labels"):
        metrics.RPC_LATENCY.labels("UnitProbe")


def test_the_job_histogram_is_observed_without_locks_and_exposed_as_before() -> None:
    # The worker observes it once per job attempt on the event loop: a LoopHistogram (one dict
    # lookup, no lock), exposed with the same series and labels as prometheus_client's Histogram.
    assert isinstance(metrics.JOB_DURATION, metrics.LoopHistogram)
    series = 'paylink_job_seconds_count{name="UNIT_PROBE",platform="sandbox_adp",result="success"}'
    before = _lines(generate_latest().decode(), series)
    metrics.JOB_DURATION.labels("UNIT_PROBE", "sandbox_adp", "success").observe(0.003)
    assert before == [] and _lines(generate_latest().decode(), series) == [f"{series} 1.0"]
    bucket = (
        'paylink_job_seconds_bucket{le="0.005",name="UNIT_PROBE",platform="sandbox_adp",result="success"}'
    )
    assert _lines(generate_latest().decode(), bucket) == [f"{bucket} 1.0"]
