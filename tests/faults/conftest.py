"""Fixtures of the fault tests (`make test-faults`): their own PostgreSQL and Kafka, started here with
scripts/stack.sh (PAYLINK_STACK_DIR=.stack/faults, ports 25532/29192/29193) and stopped at the end,
and one Deployment per test (own database, topic prefix and API port; processes killed at the end).

Every test records the figures it measured with `figures`; they are printed at the end of the run
and written to .stack/faults/last-run.json. `make fault-results` (PAYLINK_RECORD_FAULT_RESULTS=1)
also writes them to the one committed results file, docs/fault-results.json: the figures of each
test that passed replace that test's entry (with the time they were recorded), the others keep
theirs; then scripts/fault_figures.py renders the file into docs/reliability.md and
docs/deployment.md.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.faults.cluster import STACK_DIR, Deployment, FaultStack, deployment_on
from tests.harness import create_test_database, drop_database

_FIGURES: dict[str, dict[str, Any]] = {}
RESULTS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "fault-results.json"


@pytest.fixture(scope="session")
async def fault_stack() -> AsyncIterator[FaultStack]:
    stack = FaultStack()
    await stack.up()
    yield stack
    await stack.down()


@pytest.fixture
async def deployment(fault_stack: FaultStack, request: pytest.FixtureRequest) -> AsyncIterator[Deployment]:
    await fault_stack.up()  # a no-op unless an earlier test left a server down
    url = await create_test_database(fault_stack.admin_url)
    try:
        async with deployment_on(fault_stack, url, request) as dep:
            yield dep
    finally:
        await fault_stack.up()
        await drop_database(fault_stack.admin_url, url)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Records measured figures for the end-of-run report."""
    name = request.node.name

    def record(**values: Any) -> None:
        entry = _FIGURES.setdefault(name, {})
        entry.update(values)
        print(f"{name}: {values}")

    return record


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("fault test figures")
    for name, values in _FIGURES.items():
        terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    results = {
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}",
        "tests": _FIGURES,
    }
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    (STACK_DIR / "last-run.json").write_text(json.dumps(results, indent=2))
    if os.environ.get("PAYLINK_RECORD_FAULT_RESULTS") == "1":
        passed = {report.nodeid.rsplit("::", 1)[-1] for report in terminalreporter.stats.get("passed", [])}
        recorded = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"tests": {}}
        for name, values in _FIGURES.items():
            if name in passed:
                recorded["tests"][name] = {"recorded": results["finished"], "figures": values}
        recorded["machine"] = results["machine"]
        RESULTS.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
        terminalreporter.write_line(
            f"figures of {len(passed & set(_FIGURES))} passed tests recorded in {RESULTS}"
        )
