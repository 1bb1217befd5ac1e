"""bench/stages.py: each stage's figures from the jobs' milestones, and the slowest 1 %'s means
(which stage makes the p99)."""

from __future__ import annotations

from bench import stages


def _job(created: float, queued: float, run: float, to_relay: float) -> dict[str, float]:
    claimed = created + queued
    outcome = claimed + run
    sent = outcome + to_relay
    return {
        "created": created,
        "answered": created + 0.002,
        "claimed": claimed,
        "outcome": outcome,
        "committing": outcome + 0.005,
        "sent": sent,
        "published": sent + 0.003,
        "consumed": sent + 0.001,
    }


def test_the_slowest_jobs_show_the_stage_that_makes_the_p99() -> None:
    jobs = [_job(i, 0.001, 0.010, 0.020) for i in range(198)]
    jobs += [_job(1000, 0.001, 0.010, 0.500), _job(1001, 0.001, 0.010, 0.300)]  # the two slowest
    found = stages.summarize(jobs)
    assert found["jobs"] == 200 and found["slowest"] == 2
    assert found["to_relay"]["slowest_1pct_mean_ms"] == 400.0
    assert found["to_relay"]["p50_ms"] == 20.0
    assert found["run"]["slowest_1pct_mean_ms"] == 10.0
    assert found["queued_after_answer"]["p50_ms"] == -1.0  # claimed before the answer came
    assert found["total"]["p99_ms"] == 32.0  # the 198th of 200: not the two slowest
    assert found["total"]["slowest_1pct_mean_ms"] == 412.0
    assert "to_relay 20/20 (400)" in stages.line(found)
    assert found["outcome_tx"]["p50_ms"] == 5.0 and found["pickup"]["slowest_1pct_mean_ms"] == 395.0


def test_no_jobs() -> None:
    assert stages.summarize([]) == {"jobs": 0}
    assert stages.line({"jobs": 0}) == "stages: none"
