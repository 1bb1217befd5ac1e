"""The client package as a consumer gets it: `make wheel` builds paylink-proto, a fresh venv (no access
to this checkout) installs only that wheel plus what pip fetches for it, and a script type-checks with
the wheel's .pyi stubs (mypy --strict) and calls the running server with its gRPC stubs.

Runs once per CPython 3.11/3.12/3.13 found on the machine (the project's venv interpreter always;
3.12 and 3.13 from PATH or pyenv, skipped with the reason when absent); the mypy check runs on the
suite's own interpreter. docs/client.md says what was tested."""

from __future__ import annotations

import asyncio
import glob
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from service import auth, runtime
from tests.cli.util import ROOT

SMOKE = pathlib.Path(__file__).with_name("client_smoke.py")
MINORS = (11, 12, 13)


def _interpreter(minor: int) -> str | None:
    """A python3.<minor> executable, or None."""
    if sys.version_info[:2] == (3, minor):
        return sys.executable
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [shutil.which(f"python3.{minor}") or ""]
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.{minor}.*/bin/python3.{minor}"), reverse=True)
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[1])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == str(minor):
            return candidate
    return None


async def _run(*args: str, cwd: pathlib.Path, env: dict[str, str] | None = None, within: float = 480) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{text[-4000:]}"
    return text


@pytest.fixture(scope="module")
async def wheel(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """`make wheel` into a temporary folder: the target the docs name, not a copy of it."""
    out = tmp_path_factory.mktemp("wheel")
    await _run("make", "-s", "wheel", f"WHEEL_DIR={out}", cwd=ROOT)
    (built,) = out.glob("paylink_proto-*-py3-none-any.whl")
    names = zipfile.ZipFile(built).namelist()
    assert "paylink/py.typed" in names and "paylink/v1/link_pb2_grpc.pyi" in names
    assert "paylink/v1/descriptor_set.binpb" in names
    assert not [n for n in names if n.endswith(".pth")]
    return built


@pytest.mark.timeout(900)
@pytest.mark.parametrize("minor", MINORS, ids=[f"py3.{m}" for m in MINORS])
async def test_wheel_in_a_fresh_venv_calls_the_server(
    minor: int, wheel: pathlib.Path, app: runtime.Running, tmp_path: pathlib.Path
) -> None:
    python = _interpreter(minor)
    if python is None:
        pytest.skip(f"no python3.{minor} on this machine (PATH or pyenv)")
    assert app.api is not None
    _, secret = await auth.create_workspace(app.deps.pool, f"wheel-py3{minor}")
    venv = tmp_path / "venv"
    await _run(python, "-m", "venv", str(venv), cwd=tmp_path)
    vpy = str(venv / "bin" / "python")
    # Only the wheel from here; its dependencies (grpcio, protobuf, the extras) come from the index.
    # mypy once (on the interpreter that runs the suite), the runtime check on every version.
    typing = ["mypy"] if python == sys.executable else []
    extras = "[status,typing]" if typing else "[status]"
    pip = [vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    await _run(*pip, f"{wheel}{extras}", *typing, cwd=tmp_path)
    # The package comes from the venv's site-packages, not from a path entry into this checkout.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MYPYPATH")}
    where = await _run(
        vpy, "-I", "-c", "import paylink.v1, sys; print(paylink.v1.__file__)", cwd=tmp_path, env=env
    )
    assert where.strip().startswith(str(venv)), where
    site = pathlib.Path(where.strip()).parents[2]
    for pth in site.glob("*.pth"):
        assert str(ROOT) not in pth.read_text() and "paylink" not in pth.name, pth
    script = tmp_path / "client_smoke.py"
    script.write_text(SMOKE.read_text())
    if typing:
        checked = await _run(
            vpy, "-m", "mypy", "--strict", "--no-incremental", str(script), cwd=tmp_path, env=env
        )
        assert "Success" in checked, checked
    out = await _run(
        vpy, "-I", str(script), f"127.0.0.1:{app.api.port}", secret, cwd=tmp_path, env=env, within=120
    )
    lines = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert lines["identity"], out
    assert lines["error"].startswith("NOT_FOUND details=1"), out
    assert lines["event"] == "identity.added", out
