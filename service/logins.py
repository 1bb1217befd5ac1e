"""Platform logins in flight: run with no database connection held, finished with a
compare-and-set, retried while the platform is down, leased so that a dead process is noticed.

`sessions.py` commits a session AUTHENTICATING (with this process's login lease) and hands the
platform call to `LoginRunner.start`, which runs it in a background task: the caller's deadline
never cancels it. `outcome` waits for it up to just before the caller's deadline. While the call
runs the lease is renewed; if this process dies, the lease runs out and the sweeper
(`session_sweeper.py`) ends the session with LOGIN_INTERRUPTED. Credentials and MFA answers live
only in the task's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from paylink.v1 import common_pb2, link_pb2

from service import accounts, db, ids, metrics, release_guard, session_effects, session_store, timeutil, uow
from service import session_machine as machine
from service.context import CallContext
from service.deps import Deps
from service.drivers import base
from service.session_machine import State

log = logging.getLogger("paylink.logins")

PlatformCall = Callable[[], Awaitable[base.LoginResult]]
Outcome = base.LoginResult | base.PlatformError
# Builds the reply for a session in the transaction that saved it (sessions.to_proto).
Render = Callable[[db.Conn, machine.Session], Awaitable[link_pb2.LinkSession]]
Done = tuple[machine.Session, link_pb2.LinkSession]


class LoginRunner:
    """This process's logins in flight (one per session at most: the AUTHENTICATING commit decides)."""

    def __init__(self, deps: Deps, render: Render) -> None:
        self.deps = deps
        self._render = render
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = session_store.Lease(owner, deps.settings.login_lease_seconds)
        self._tasks: dict[uuid.UUID, asyncio.Task[Done]] = {}
        # Login transactions (the AUTHENTICATING commit and the outcome's) leave two of the pool's
        # connections to everything else: a burst of logins ending together queues here, not in the
        # pool's queue, so the process's other RPCs (GetAccount...) still find a connection at once.
        self.writes = asyncio.Semaphore(max(1, deps.settings.database_pool_size - 2))

    def start(self, session: machine.Session, call: PlatformCall) -> asyncio.Task[Done]:
        """Runs the platform call of an AUTHENTICATING session, then commits its outcome."""
        task = asyncio.create_task(self._run(session, call), name=f"login-{session.id}")
        self._tasks[session.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(session.id, None))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # logged in _run already
        return task

    async def outcome(self, task: asyncio.Task[Done], call: CallContext) -> link_pb2.LinkSession | None:
        """The reply after the login if it ends before the caller's deadline (with a margin to
        answer in), else None: the caller answers with the session still AUTHENTICATING."""
        left = call.time_left()
        timeout = None if left is None else max(0.0, left - min(0.5, left * 0.2))
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if task not in done or task.cancelled():
            return None
        return task.result()[1]  # a failure to save the outcome (database away) is the call's error

    async def drain(self, grace: float) -> None:
        """At shutdown: lets the logins in flight finish, up to `grace` seconds (the lease covers the rest)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=grace)

    async def _run(self, begun: machine.Session, call: PlatformCall) -> Done:
        renew = asyncio.create_task(self._renew(begun))
        metrics.LOGINS_IN_FLIGHT.inc()
        try:
            result = await self._call(call)
        finally:
            renew.cancel()
            metrics.LOGINS_IN_FLIGHT.dec()
        try:
            return await self._finish(begun, result)
        except db.UNAVAILABLE as exc:  # the database went away: the RPC answers UNAVAILABLE
            log.warning(
                "login outcome not saved (database unavailable); the lease will end the session",
                extra={"session": str(begun.id), "error": type(exc).__name__},
            )
            raise
        except Exception as exc:
            if release_guard.refused(exc):  # queueing the session's jobs: the RPC answers UNAVAILABLE
                self._refused(begun, exc)
                raise
            log.exception(
                "login outcome not saved; the lease will end the session", extra={"session": str(begun.id)}
            )
            raise

    def _refused(self, begun: machine.Session, exc: BaseException) -> None:
        """The release guard refused the outcome's write: the process is marked refused, and it is
        said once per back-off (however many logins meet it), without a stack trace."""
        guard = self.deps.release_guard
        guard.refuse(exc)
        quiet = guard.say("logins")
        if quiet is not None:
            log.warning(
                f"login outcome not saved, the lease will end the session: {release_guard.FIX}",
                extra={"session": str(begun.id), "error": str(exc), "quiet_seconds": round(quiet, 1)},
            )

    async def _renew(self, begun: machine.Session) -> None:
        with contextlib.suppress(Exception):  # a missed renewal only shortens the lease
            while True:
                await asyncio.sleep(self.lease.seconds / 3)
                async with self.writes:  # logins that began together renew together: leave room
                    await session_store.renew_lease(self.deps.pool, begun, self.lease)

    async def _call(self, call: PlatformCall) -> Outcome:
        """The platform's answer; unavailable or timed out: a few more tries with backoff first."""
        settings = self.deps.settings
        last = base.PlatformError(common_pb2.JOB_ERROR_CODE_PLATFORM_UNAVAILABLE, transient=True)
        for attempt in range(1, settings.login_retries + 2):
            try:
                async with asyncio.timeout(settings.platform_call_timeout_seconds):
                    return await call()
            except base.PlatformError as exc:
                if exc.code not in machine.TRANSIENT_ERRORS:
                    return exc
                last = exc
            except TimeoutError:
                last = base.PlatformError(
                    common_pb2.JOB_ERROR_CODE_TIMEOUT, "no answer in time", transient=True
                )
            metrics.LOGIN_RETRIES.labels(common_pb2.JobErrorCode.Name(last.code)).inc()  # type: ignore[arg-type]
            if attempt <= settings.login_retries:
                delay = timeutil.backoff(
                    attempt, settings.login_retry_base_seconds, settings.login_retry_max_seconds
                )
                await asyncio.sleep(delay.total_seconds())
        return last

    async def _finish(self, begun: machine.Session, result: Outcome) -> Done:
        deps = self.deps
        async with self.writes, uow.begin(deps) as work:
            stored = await session_store.load(work.conn, begun.workspace_id, str(begun.id), lock=True)
            current = stored.session
            if current.version != begun.version or current.state != State.AUTHENTICATING:
                # The lease ran out and the session ended meanwhile: the platform's answer is late.
                log.warning("late login outcome dropped", extra={"session": str(begun.id)})
                return current, await self._render(work.conn, current)
            step = await self._step(work, current, result)
            saved = await session_effects.apply(deps, work, stored, step)
            # The reply, read in the same transaction: the state this login produced, and no
            # second trip to the pool for it.
            return saved, await self._render(work.conn, saved)

    async def _step(
        self, work: uow.UnitOfWork, session: machine.Session, result: Outcome
    ) -> machine.Transition:
        settings = self.deps.settings
        if isinstance(result, base.PlatformError):
            return machine.login_failed(session, result.code, max_attempts=settings.max_login_attempts)
        if isinstance(result, base.MfaChallenge):
            return machine.mfa_challenged(session, result.type, result.prompt, result.state)
        connected = True
        if session.on_demand and session.account_id is not None:
            _, connected = await accounts.platform_and_connected(work.conn, session.account_id, lock=True)
        return machine.logged_in(session, result.grant.secret, ids.new_id(), account_connected=connected)
