"""docs/grpcurl.md cannot rot: every ```sh block runs, in order, in one shell session (variables
carry over as they would in a reader's terminal) against the in-process server, with grpcurl
built by scripts/tools.sh. Each block must exit 0, each RPC call must print JSON, and every RPC
of every paylink.v1 service must have an example."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from paylink.v1 import account_pb2, catalog_pb2, job_pb2, link_pb2, link_token_pb2, sandbox_pb2

from service import runtime
from service.config import Settings
from tests.cli.util import ROOT, service_env

DOC = ROOT / "docs" / "grpcurl.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
CALL = re.compile(r"\b((?:paylink\.v1|grpc\.health\.v1)\.\w+)/(\w+)")


def blocks() -> list[str]:
    return BLOCK.findall(DOC.read_text())


@pytest.fixture(scope="module")
def grpcurl() -> pathlib.Path:
    result = subprocess.run(
        [str(ROOT / "scripts" / "tools.sh"), "grpcurl"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        if shutil.which("go") is None:
            pytest.skip(
                f"grpcurl cannot be built without Go (scripts/tools.sh grpcurl): {result.stderr[-300:]}"
            )
        raise AssertionError(f"scripts/tools.sh grpcurl failed:\n{result.stderr[-3000:]}")
    return pathlib.Path(result.stdout.strip())


def test_every_rpc_has_an_example() -> None:
    documented = {f"{service}/{method}" for block in blocks() for service, method in CALL.findall(block)}
    services = [
        link_token_pb2.DESCRIPTOR.services_by_name["LinkTokenService"],
        link_pb2.DESCRIPTOR.services_by_name["LinkService"],
        account_pb2.DESCRIPTOR.services_by_name["AccountService"],
        job_pb2.DESCRIPTOR.services_by_name["JobService"],
        sandbox_pb2.DESCRIPTOR.services_by_name["SandboxService"],
        catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"],
    ]
    expected = {f"{s.full_name}/{m.name}" for s in services for m in s.methods}
    expected.add("grpc.health.v1.Health/Check")
    assert sorted(expected - documented) == []


def _prints_json(output: str) -> bool:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"^\{", output, re.M):
        try:
            decoder.raw_decode(output[match.start() :])
            return True
        except json.JSONDecodeError:
            continue
    return False


async def test_grpcurl_doc_examples_run(
    grpcurl: pathlib.Path, app: runtime.Running, settings: Settings, tmp_path: pathlib.Path
) -> None:
    assert app.api is not None
    env = service_env(settings)
    env["ADDR"] = f"127.0.0.1:{app.api.port}"
    env["PATH"] = os.pathsep.join(
        [str(grpcurl.parent), str(pathlib.Path(sys.executable).parent), env["PATH"]]
    )
    state = tmp_path / "state.sh"
    state.write_text("")
    found = blocks()
    assert len(found) >= 20
    for number, block in enumerate(found, start=1):
        # The reader's terminal: what earlier blocks set is still there (set -a exports it).
        script = f"set -a\nsource {state}\nset -eo pipefail\n{block}\n{{ export -p; declare -f; }} > {state}.next\n"
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            script,
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        text, errors = out.decode(), err.decode()
        where = f"docs/grpcurl.md block {number}:\n{block}\n--- stdout:\n{text[-2000:]}\n--- stderr:\n{errors[-2000:]}"
        assert proc.returncode == 0, where
        os.replace(f"{state}.next", state)
        if CALL.search(block):
            assert _prints_json(text) or _prints_json(errors), where
