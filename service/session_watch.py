"""Session changes, fanned out in memory: one LISTEN connection per process for every watcher.

`session_store` sends `NOTIFY paylink_sessions, '<session id>'` with every saved change. A
`SessionWatcher` listens on one dedicated connection and sets the events of the watchers of that
session; a watcher then re-reads the session through the pool (briefly). NOTIFY is a hint: each
watcher also re-reads every `poll` seconds, so a lost connection or a missed NOTIFY only delays it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import Iterator

from service import db, session_store
from service.config import Settings

log = logging.getLogger("paylink.watch")


class SessionWatcher:
    def __init__(self, settings: Settings, poll: float = 5.0) -> None:
        self._settings = settings
        self._poll = poll
        self._watchers: dict[uuid.UUID, set[asyncio.Event]] = collections.defaultdict(set)
        self._listener: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @contextlib.contextmanager
    def subscribe(self, session_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set whenever the session changes, while the `with` lasts."""
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="session-watch")
        changed = asyncio.Event()
        self._watchers[session_id].add(changed)
        try:
            yield changed
        finally:
            watchers = self._watchers.get(session_id)
            if watchers is not None:
                watchers.discard(changed)
                if not watchers:
                    del self._watchers[session_id]

    async def wait(self, changed: asyncio.Event) -> None:
        """Until the session changes (or the poll interval passes)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), self._poll)

    @property
    def watching(self) -> int:
        return sum(len(w) for w in self._watchers.values())

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            session_id = uuid.UUID(str(payload))
        except ValueError:
            return
        for changed in self._watchers.get(session_id, ()):
            changed.set()

    def _wake_all(self, *_: object) -> None:
        for watchers in self._watchers.values():
            for changed in watchers:
                changed.set()

    async def _listen(self) -> None:
        while not self._stopping.is_set():
            try:
                conn: db.Conn = await db.connect(self._settings.database_url)
            except db.CONNECTION_LOST as exc:
                log.warning("session watch cannot listen, retrying", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
                continue
            try:
                await conn.add_listener(session_store.NOTIFY_CHANNEL, self._notified)
                conn.add_termination_listener(self._wake_all)
                self._wake_all()  # changes made while not listening
                while not conn.is_closed() and not self._stopping.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), 1.0)
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def stop(self) -> None:
        self._stopping.set()
        self._wake_all()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener
