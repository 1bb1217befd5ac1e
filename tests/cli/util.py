"""Running `python -m service …` (and other scripts) as subprocesses against the test run's
database, Kafka topic prefix and key ring."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pathlib
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping

from service.config import Settings
from tests import secret_scan

ROOT = pathlib.Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The parent's environment without its PAYLINK_* variables, plus the test run's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYLINK_")}
    env.update(
        PAYLINK_DATABASE_URL=settings.database_url,
        PAYLINK_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        PAYLINK_TOPIC_PREFIX=settings.topic_prefix,
        PAYLINK_VAULT_KEYS=settings.vault_keys,
        PAYLINK_METRICS_PORT="0",
        PAYLINK_SHUTDOWN_GRACE_SECONDS="2",
        PAYLINK_WORKER_POLL_SECONDS="0.5",
        PAYLINK_RELAY_POLL_SECONDS="0.5",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "generated")]),
    )
    if settings.vault_primary_key:
        env["PAYLINK_VAULT_PRIMARY_KEY"] = settings.vault_primary_key
    env.update(overrides)
    return env


async def run(
    args: list[str], env: Mapping[str, str], within: float = 60, program: list[str] | None = None
) -> Result:
    """Runs `python -m service *args` (or `program *args`) to completion."""
    proc = await asyncio.create_subprocess_exec(
        *(program or [sys.executable, "-m", "service"]),
        *args,
        env=dict(env),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    # Logs go to stderr: the secrets scan reads them (stdout may show a new secret, by design).
    secret_scan.PROCESS_LOG_TEXTS.append((" ".join(args), err.decode(errors="replace")))
    return Result(proc.returncode, out.decode(), err.decode())


def fields(output: str) -> dict[str, str]:
    """`key=value` lines of a command's output."""
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


@dataclasses.dataclass
class Server:
    proc: asyncio.subprocess.Process
    banner: str
    stderr_path: pathlib.Path

    def stderr(self) -> str:
        return _tail(self.stderr_path)


def _tail(path: pathlib.Path, chars: int = 3000) -> str:
    return path.read_text()[-chars:]


@contextlib.asynccontextmanager
async def serving(
    command: str, env: Mapping[str, str], tmp: pathlib.Path, startup: float = 30
) -> AsyncIterator[Server]:
    """Starts `python -m service <command>`, waits for its 'paylink serving' line, and on exit sends
    SIGTERM and asserts a clean exit (0) within a few seconds."""
    stderr_path = tmp / f"{command}-{time.monotonic_ns()}.stderr"
    secret_scan.PROCESS_LOG_FILES.append(stderr_path)
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            command,
            env=dict(env),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), startup)
        assert line.startswith(b"paylink serving"), (line, _tail(stderr_path))
        yield Server(proc, line.decode().strip(), stderr_path)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    await stop(proc, stderr_path)


async def stop(proc: asyncio.subprocess.Process, stderr_path: pathlib.Path, within: float = 10) -> float:
    """SIGTERM, then asserts exit code 0 within `within` seconds; returns how long it took."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.wait_for(proc.wait(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"no exit within {within} s of SIGTERM: {_tail(stderr_path)}") from None
    assert code == 0, (code, _tail(stderr_path))
    return time.monotonic() - started
