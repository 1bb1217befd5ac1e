"""The previous release's worker, run for real beside this one (migration 0174, the release guard):
its code from the commit before 0173 (cbd2dc1~1, `git archive`), started as its own OS process on a
database of this release. It starts and polls, and each claim is refused (SQLSTATE PL001, logged
with the fix); it claims nothing, while this release's worker runs every job once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from paylink.v1 import common_pb2 as c

from tests.faults.cluster import ROOT, Deployment, Proc, queued_sessions, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

PREVIOUS_RELEASE = "cbd2dc1~1"  # the last commit before migrations/0173_job_queue.sql
SESSIONS = 10
JOBS = [c.JOB_NAME_IDENTITY, c.JOB_NAME_INCOME]


def _previous_release(into: Path) -> Path:
    """The previous release's `service` and `generated` trees, from git."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", PREVIOUS_RELEASE, "service", "generated"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:  # a checkout without that history (a shallow clone)
        pytest.skip(f"git archive {PREVIOUS_RELEASE}: {archive.stderr.decode().strip()}")
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


async def test_a_worker_of_the_previous_release_is_refused_and_claims_nothing(
    deployment: Deployment, tmp_path: Path
) -> None:
    dep = deployment
    old_tree = _previous_release(tmp_path / "previous")
    await queued_sessions(dep, SESSIONS, JOBS)
    total = SESSIONS * len(JOBS)

    env = dep.env()
    env["PYTHONPATH"] = f"{old_tree}:{old_tree / 'generated'}"
    old = Proc("worker", env, dep.log_dir / "old-worker.log", cwd=old_tree)
    dep.procs.append(old)
    await old.start()  # it starts: nothing in its own checks notices the newer schema

    async def refused_twice() -> bool:
        return (
            old.log_path.read_text(errors="replace").count("paylink release guard: UPDATE on jobs refused")
            >= 2
        )

    await wait_until(refused_twice, 30, "the previous release's worker was refused at two polls")
    assert (await dep.job_statuses())["queued"] == total  # it claimed nothing
    assert old.returncode is None  # and keeps failing loudly until it is stopped

    await dep.spawn("worker")
    await dep.wait_all_jobs_final(total, within=90)
    jobs = await dep.jobs()
    assert {j["status"] for j in jobs} == {"success"}
    assert {j["attempts"] for j in jobs} == {1}  # each run once, by this release's worker
    assert "job attempt finished" not in old.log_path.read_text(errors="replace")
    assert await old.stop() == 0
