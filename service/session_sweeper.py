"""Ends the Link sessions nobody else will: logins whose process died (their lease ran out:
LOGIN_INTERRUPTED) and sessions that expired waiting for the user (EXPIRED). Each ends through the
state machine, with its link_session.failed event. Runs in every API process; concurrent sweepers
take disjoint sessions (the row lock, then a re-check)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from service import session_effects, session_store, timeutil, uow
from service import session_machine as machine
from service.deps import Deps
from service.session_machine import State

log = logging.getLogger("paylink.sweeper")


async def sweep_once(deps: Deps) -> int:
    """Ends every stale session found now; returns how many."""
    ended = 0
    for session_id, workspace_id in await session_store.stale(deps.pool):
        async with uow.begin(deps) as work:
            stored = await session_store.load(work.conn, workspace_id, str(session_id), lock=True)
            session, now = stored.session, timeutil.now()
            step = None
            if session.state == State.AUTHENTICATING:
                if stored.lease_expires_at is not None and stored.lease_expires_at < now:
                    step = machine.interrupted(session)
            else:
                step = machine.expire(session, now)
            if step is None:
                continue  # another process got there first, or the lease was renewed
            await session_effects.apply(deps, work, stored, step)
            ended += 1
            log.warning(
                "link session ended by the sweeper",
                extra={"session": str(session_id), "reason": step.session.failure_reason.name},
            )
    return ended


class SessionSweeper:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._interval = min(5.0, deps.settings.login_lease_seconds / 2)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await sweep_once(self._deps)
            except Exception as exc:  # the database is away: health reports it; try again later
                log.warning("session sweep failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
