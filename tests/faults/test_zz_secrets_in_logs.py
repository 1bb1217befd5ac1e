"""The fault tests' processes (api, worker, relay, serve: real subprocesses, killed, paused and
restarted) never wrote a secret to their logs, in clear or encoded: the API secrets of every client
of the run, the sandbox password and MFA answer. Runs after the other fault tests (runs_last)."""

from __future__ import annotations

import pytest

from tests import secret_scan

pytestmark = [pytest.mark.faults, pytest.mark.runs_last]

NEEDLES = ("pass_good", "mfa_code")


def test_no_secret_in_any_fault_process_log() -> None:
    logs = secret_scan.process_logs()
    if not logs:
        pytest.skip("no fault test ran in this session")
    needles = {form: repr(n) for n in NEEDLES for form in secret_scan.encoded_forms(n)}
    needles.update(secret_scan.secret_forms())
    assert secret_scan.API_SECRETS, "fault tests create clients: their secrets must be known"
    scanner = secret_scan.Scanner(needles)
    hits: list[str] = []
    for name, text in logs:
        hits += scanner.scan(name, text)
    assert hits == []
