"""bench/peers.py `summarize`: interleaved rounds of the queue benchmark summed up (make bench's
peers part): each queue's median run with every round's figure, and paylink's ratio to the faster
peer judged round by round (median of the rounds' ratios, not a ratio of medians)."""

from __future__ import annotations

from typing import Any

from tests.unit.scripts import load_script


def _run(queue: str, rate: float) -> dict[str, Any]:
    return {"queue": queue, "mode": "drain", "jobs": 5000, "jobs_per_s": rate, "settings": ""}


QUEUES = ("paylink", "pgqueuer", "procrastinate")
# Round 2 ran while the host was slow for everyone: its figures are low, its ratio is not.
ROUNDS = [
    {
        "paylink": _run("paylink", 6600),
        "pgqueuer": _run("pgqueuer", 6000),
        "procrastinate": _run("procrastinate", 300),
    },
    {
        "paylink": _run("paylink", 3300),
        "pgqueuer": _run("pgqueuer", 3000),
        "procrastinate": _run("procrastinate", 3100),
    },
    {
        "paylink": _run("paylink", 6000),
        "pgqueuer": _run("pgqueuer", 8000),
        "procrastinate": _run("procrastinate", 290),
    },
]


def test_each_queue_is_its_median_run_with_every_round() -> None:
    by_queue = {s["queue"]: s for s in load_script("bench/peers.py").summarize(QUEUES, ROUNDS)}
    assert [s for s in by_queue] == list(QUEUES)
    assert by_queue["paylink"]["jobs_per_s"] == 6000
    assert by_queue["paylink"]["runs"] == [6600, 3300, 6000]
    assert by_queue["pgqueuer"]["jobs_per_s"] == 6000
    assert by_queue["procrastinate"]["runs"] == [300, 3100, 290]
    assert "vs_faster_peer" not in by_queue["pgqueuer"]


def test_paylink_is_judged_on_the_median_of_each_rounds_ratio_to_its_faster_peer() -> None:
    vs = next(s for s in load_script("bench/peers.py").summarize(QUEUES, ROUNDS) if s["queue"] == "paylink")[
        "vs_faster_peer"
    ]
    # Round 2's faster peer is procrastinate (3,100 > 3,000); 3,300 / 3,100 = 1.065.
    assert vs["peers"] == ["pgqueuer", "procrastinate", "pgqueuer"]
    assert vs["ratios"] == [1.1, 1.065, 0.75]
    assert vs["median"] == 1.065  # the ratio of the medians (6,000 / 6,000 = 1.0) would say otherwise
