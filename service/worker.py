"""The job worker: claims runnable jobs with FOR UPDATE SKIP LOCKED, runs them, writes outcomes.

Woken by NOTIFY on `paylink_jobs` (not its own process's: `_notified`) or directly by its own
process's CreateJob (`take_wake`, naming the job: none for a job it already holds or its claim took;
service/wakeups.py), with a slow poll behind it (a NOTIFY can be missed); it claims again at once
only after a claim that took all it asked for (`claim_more`). Each claim takes a lease that a heartbeat extends; a job whose worker died is rescued once its lease runs
out and runs again (handlers are idempotent: an outcome is written only by the lease holder).
Transient platform errors retry with jittered exponential backoff; platform calls are bounded by
a timeout and a per-platform concurrency limit.

A job takes one of `worker_concurrency` slots from its claim until its outcome is handed to the
completer (service/completer.py), not until that outcome commits: the next job's platform call
starts while the outcomes of the last ones are written. The worker holds (and its heartbeat renews
the lease of) every job until its outcome is committed; claims stop while more than the
completer's `max_backlog` outcomes wait to be written, so what a worker holds stays bounded
(`worker_concurrency` + `max_backlog`) when the database is slower than the platform.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import socket
import time
import uuid
from typing import Any

import asyncpg
from opentelemetry.trace import SpanKind
from paylink.v1 import common_pb2

from service import db, grants, job_calls, logs, metrics, queue, release_guard, timeutil, tracing, wakeups
from service.completer import MAX_BACKLOG, Completer
from service.deps import Deps
from service.drivers.base import AccessGrant, JobContext, JobPending, LoggedIn, PlatformError
from service.job_outcomes import Failure, Outcome, Pending, Retry, Success
from service.queue import ClaimedJob

log = logging.getLogger("paylink.worker")


backoff = timeutil.backoff  # jittered retry delays (shared with logins)
# Claims refused by the database's release guard (a newer release migrated it): the worker waits
# the guard's back-off after the n-th refusal in a row, or until the health check's probe finds the
# guard accepting this code again (service/release_guard.py).
REFUSED_BACKOFF_BASE = release_guard.BACKOFF_BASE
REFUSED_BACKOFF_CAP = release_guard.BACKOFF_CAP


def claim_more(claimed: int, limit: int) -> bool:
    """Whether more jobs may wait than a claim of at most `limit` took: not when it took fewer."""
    return claimed >= limit


class _InCall:
    """Counts a job in `Worker.calls_in_flight` while it calls its platform (one call at a time: a
    refresh re-accesses, then fetches)."""

    __slots__ = ("worker",)

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def __aenter__(self) -> None:
        self.worker.calls_in_flight += 1

    async def __aexit__(self, *_: object) -> None:
        self.worker.calls_in_flight -= 1


class Worker:
    def __init__(self, deps: Deps, worker_id: str | None = None) -> None:
        self.deps = deps
        self.id = worker_id or f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self._wake = wakeups.WakeUps()
        self._stopping = asyncio.Event()
        # Every job held: claimed, its outcome not committed yet (the heartbeat renews their leases).
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        # The held jobs that take a slot: claimed, their outcome not handed to the completer yet.
        self._slots: dict[uuid.UUID, str] = {}  # job id -> platform id
        self._room = asyncio.Event()  # a slot is free, or the completer's backlog shrank
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._per_platform: collections.Counter[str] = collections.Counter()  # slots taken, by platform
        backlog = min(deps.settings.worker_concurrency, MAX_BACKLOG)
        self.completer = Completer(deps, self.id, max_backlog=backlog)
        self.finished = 0
        self.calls_in_flight = 0  # jobs inside their platform calls now (metrics, bench/latency.py)
        # Claims refused by the release guard in a row: one ERROR with the fix per back-off.
        self.refused = release_guard.BackOff(deps.release_guard, log, logging.ERROR, release_guard.FIX)
        self._in_call = _InCall(self)
        self._finished: dict[tuple[str, ...], Any] = {}  # metrics.JOBS_FINISHED's children
        self._claiming = False  # the claim loop runs with its LISTEN connection

    def stop(self) -> None:
        self._stopping.set()
        self._wake.other()
        self._room.set()

    async def run(self) -> None:
        """Runs until stop(); then waits for in-flight jobs up to the grace period and releases the rest."""
        settings = self.deps.settings
        metrics.WORKER_JOBS_HELD.set_function(lambda: self.jobs_held)
        metrics.WORKER_PLATFORM_CALLS.set_function(lambda: self.calls_in_flight)
        metrics.WORKER_OUTCOMES_WAITING.set_function(lambda: self.outcomes_waiting)
        background = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._rescue_loop())]
        completer = asyncio.create_task(self.completer.run())
        try:
            while not self._stopping.is_set():
                try:
                    await self._listen_and_claim()
                except db.CONNECTION_LOST as exc:
                    if release_guard.refused(exc):  # backs off, ended early by a probe that goes through
                        await self.refused.wait(exc, self._stopping)
                        continue
                    log.warning("worker lost the database, retrying", extra={"error": str(exc)})
                    await self._sleep(1.0)
        finally:
            for task in background:
                task.cancel()
            if self._running:
                _, late = await asyncio.wait(
                    list(self._running.values()), timeout=settings.shutdown_grace_seconds
                )
                for task in late:
                    task.cancel()
            completer.cancel()  # writes what the finished jobs handed over, then stops
            with contextlib.suppress(BaseException):
                await completer
            with contextlib.suppress(Exception):
                await queue.release_worker(self.deps.pool, self.id)

    def take_wake(self, platform_id: str | None, job_id: uuid.UUID | None = None) -> bool:
        """A CreateJob of this process committed job `job_id` of `platform_id` (None: not known): wakes
        this worker for it (none needed for a job it holds), without a NOTIFY, while it claims and has a
        free slot for that platform (True); else False: the caller notifies (service/job_intake.py)."""
        settings = self.deps.settings
        if not self._claiming or self._stopping.is_set() or self._free_slots() <= 0:
            return False
        if job_id is not None and job_id in self._running:
            return True
        if platform_id is not None and self._per_platform[platform_id] >= settings.platform_concurrency:
            return False
        self._wake.job(job_id)
        return True

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _listen_and_claim(self) -> None:
        settings = self.deps.settings
        conn: db.Conn = await db.connect(settings.database_url)
        try:
            await conn.add_listener(queue.NOTIFY_CHANNEL, self._notified)
            # Claims use the pool, so a lost LISTEN connection (database restart) fails nothing here:
            # notice it, or every later job waits a whole poll for want of a NOTIFY.
            conn.add_termination_listener(lambda *_: self._wake.other())
            self._claiming = True
            self.deps.intake.worker = self  # this process's CreateJobs wake it directly (take_wake)
            while not self._stopping.is_set():
                if conn.is_closed():
                    raise asyncpg.InterfaceError("the LISTEN connection was closed")
                if self._free_slots() <= 0:
                    await self._wait_for_room()
                    continue
                named = self._wake.claiming()
                free = self._free_slots()
                claimed, more = await self._claim(free)
                self.refused.accepted()  # a claim went through: the guard accepts this code
                for job in claimed:
                    self._start(job)
                if self._wake.claimed(named, (job.id for job in claimed)) and len(claimed) == free:
                    self._wake.clear()  # full without some jobs it was woken for: shared with others
                    wakeups.wake_soon(self.deps.pool)
                if more:
                    continue  # claims again once it has room
                # Until a job may have come (this process's CreateJob for a job no claim took, a NOTIFY,
                # a rescue, a slot of a platform at its limit freed) or the poll (a retry, a lost NOTIFY).
                await self._wake.wait(settings.worker_poll_seconds)
        finally:
            self._claiming = False
            if self._wake.pending:  # taken while it could not claim them: the others are told
                self._wake.clear()
                wakeups.wake_soon(self.deps.pool)
            with contextlib.suppress(Exception):
                await conn.close()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        """A NOTIFY from this process's own pool (`wakeups.wake_soon`: jobs this worker had no room for,
        or came back full from) is for the other processes' workers: this one claims when it has room."""
        if payload != wakeups.wake_payload(self.deps.pool):
            self._wake.other()

    @property
    def jobs_held(self) -> int:
        """Jobs claimed whose outcome is not committed yet (slots taken + outcomes waiting)."""
        return len(self._running)

    @property
    def outcomes_waiting(self) -> int:
        """Held jobs whose outcome is with the completer, not committed yet."""
        return len(self._running) - len(self._slots)

    def _free_slots(self) -> int:
        """How many jobs to claim now: the free slots, none while the completer is behind (more than
        its `max_backlog` outcomes waiting): the worker holds at most concurrency + max_backlog."""
        if self.outcomes_waiting > self.completer.max_backlog:
            return 0
        return self.deps.settings.worker_concurrency - len(self._slots)

    async def _wait_for_room(self) -> None:
        # An event set by each freed slot and committed outcome, not asyncio.wait over the running
        # tasks: that adds and removes a callback on every one of them per wait (with 2,000 held
        # jobs, 14 % of the worker's CPU in the 2 s platform benchmark).
        self._room.clear()
        while self._free_slots() <= 0 and not self._stopping.is_set():
            await self._room.wait()
            self._room.clear()

    async def _claim(self, limit: int) -> tuple[list[ClaimedJob], bool]:
        """Claims up to `limit` jobs; with them, whether more may wait (`claim_more`)."""
        settings = self.deps.settings
        lease = dt.timedelta(seconds=settings.worker_lease_seconds)
        # Jobs waiting for a platform's semaphore would hold slots that other platforms can use (a hung
        # platform would block them all): claim nothing for a platform at its limit, and at most the
        # limit per claim.
        full = [p for p, n in self._per_platform.items() if n >= settings.platform_concurrency]
        limit = min(limit, settings.platform_concurrency)
        claimed = await queue.claim(self.deps.pool, self.id, lease, limit, full)
        return claimed, claim_more(len(claimed), limit)

    def _start(self, job: ClaimedJob) -> None:
        task = asyncio.create_task(self._execute(job))
        self._running[job.id] = task
        self._slots[job.id] = job.platform_id
        self._per_platform[job.platform_id] += 1
        task.add_done_callback(lambda _: self._done(job.id))

    def _free_slot(self, job_id: uuid.UUID) -> None:
        """The job's platform work is over (its outcome goes to the completer): its slot is free."""
        platform_id = self._slots.pop(job_id, None)
        if platform_id is not None:
            held = self._per_platform[platform_id]
            self._per_platform[platform_id] = held - 1
            self._room.set()
            if held >= self.deps.settings.platform_concurrency:
                self._wake.other()  # claims skipped this platform: its jobs may wait

    def _done(self, job_id: uuid.UUID) -> None:
        self._free_slot(job_id)  # a task cancelled (or crashed) before its hand-over
        self._running.pop(job_id, None)
        self.finished += 1
        self._room.set()  # the completer's backlog shrank

    async def _heartbeat(self) -> None:
        settings = self.deps.settings
        lease = dt.timedelta(seconds=settings.worker_lease_seconds)
        while True:
            await asyncio.sleep(settings.worker_lease_seconds / 3)
            if self._running:
                with contextlib.suppress(Exception):
                    await queue.heartbeat(self.deps.pool, list(self._running), self.id, lease)

    async def _rescue_loop(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.deps.settings.worker_lease_seconds / 2))
            with contextlib.suppress(Exception):
                rescued = await queue.rescue(self.deps.pool)
                if rescued:
                    log.warning("rescued jobs with expired leases", extra={"count": rescued})
                    self._wake.other()

    async def _execute(self, job: ClaimedJob) -> None:
        """Runs one attempt as a span continuing the job's stored trace context, under its request
        id: the platform calls are child spans, and the events its outcome writes carry both."""
        name = common_pb2.JobName.Name(common_pb2.JobName.ValueType(job.name))
        attributes: dict[str, str | int] | None = None  # none to build when the span records nothing
        if tracing.recording():
            attributes = {"paylink.job_id": str(job.id), "paylink.job": name, "paylink.attempt": job.attempts}
            attributes |= {"paylink.account_id": str(job.account_id), "paylink.platform_id": job.platform_id}
        span = tracing.continued_span(
            job.trace[0], f"job {name}", kind=SpanKind.CONSUMER, attributes=attributes
        )
        with tracing.request(job.trace[1]), span:
            await self._attempt(job, name)

    async def _attempt(self, job: ClaimedJob, name: str) -> None:
        started = time.perf_counter()
        # Every log line of this job's task (including "event appended") carries these.
        logs.bind(
            job_id=str(job.id), account_id=str(job.account_id), platform=job.platform_id, worker=self.id
        )
        try:
            outcome = await self._run(job)
        except Exception as exc:  # a bug or a lost database: retry as a system error
            log.exception("job crashed", extra={"job_id": str(job.id)})
            outcome = self._retry_or_fail(
                job, common_pb2.JOB_ERROR_CODE_UNSPECIFIED, type(exc).__name__, system=True
            )
        label = type(outcome).__name__.lower()
        metrics.JOB_DURATION.labels(name, job.platform_id, label).observe(time.perf_counter() - started)
        # With other jobs' outcomes, in one transaction (service.completer), in this job's context.
        # The slot is free once the outcome is queued; the job stays held (and leased) until it commits.
        waiting = self.completer.enqueue(job.id, job.account_id, outcome)
        self._free_slot(job.id)
        try:
            written = await waiting
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
            return  # the database stayed away: the lease will expire and the job is rescued
        except asyncpg.PostgresError as exc:
            if release_guard.refused(exc):
                return  # still refused at shutdown (the completer said so once): rescued like the above
            raise
        if written and isinstance(outcome, (Success, Failure)):
            failed = isinstance(outcome, Failure)
            code = (
                common_pb2.JobErrorCode.Name(common_pb2.JobErrorCode.ValueType(outcome.error_code))
                if isinstance(outcome, Failure)
                else ""
            )
            self._finished_counter(name, job.platform_id, "error" if failed else "success", code).inc()
        if log.isEnabledFor(logging.INFO):
            log.info(
                "job attempt finished",
                extra={
                    "job_id": str(job.id),
                    "job": name,
                    "result": label,
                    "attempt": job.attempts,
                    "written": written,
                },
            )

    def _finished_counter(self, *labels: str) -> Any:
        """`metrics.JOBS_FINISHED`'s child for these labels, looked up once (`labels()` takes a lock)."""
        child = self._finished.get(labels)
        if child is None:
            child = self._finished[labels] = metrics.JOBS_FINISHED.labels(*labels)
        return child

    def _retry_or_fail(self, job: ClaimedJob, code: int, message: str, *, system: bool = False) -> Outcome:
        settings = self.deps.settings
        if job.attempts < settings.job_max_attempts:
            delay = backoff(job.attempts, settings.job_retry_base_seconds, settings.job_retry_max_seconds)
            return Retry(delay, code, message)
        return Failure(code, message, common_pb2.JOB_ERROR_TYPE_SYSTEM if system else 0, transient=True)

    async def _run(self, job: ClaimedJob) -> Outcome:
        deps = self.deps
        if job.grant_sealed is None:  # the claim returned no grant: the account is disconnected
            return Failure(common_pb2.JOB_ERROR_CODE_USER_ACTION_REQUIRED, "account is disconnected")
        grant = grants.open_grant(deps, job.account_id, job.grant_sealed)
        if job.name == common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS and await queue.has_succeeded(
            deps.pool, job.batch_id, common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH
        ):
            # The switch of this batch just stored the allocations as the platform returned them.
            return Success()
        driver = deps.drivers.driver_for(job.platform_id)
        limit = self._limits.setdefault(
            job.platform_id, asyncio.Semaphore(deps.settings.platform_concurrency)
        )
        new_grant: grants.NewGrant | None = None
        try:
            async with limit, asyncio.timeout(deps.settings.platform_call_timeout_seconds), self._in_call:
                if job.origin == common_pb2.JOB_ORIGIN_REFRESH:
                    access = await driver.reaccess(str(job.account_id), job.platform_id, AccessGrant(grant))
                    if not isinstance(access, LoggedIn):
                        return Failure(
                            common_pb2.JOB_ERROR_CODE_USER_ACTION_REQUIRED,
                            "the platform asks for MFA: send the user through Link",
                        )
                    if access.grant.secret != grant:  # a new platform session: store its grant
                        grant = access.grant.secret
                        new_grant = grants.NewGrant(job.account_id, grant, job.grant_sealed)
                ctx = JobContext(
                    account_id=str(job.account_id),
                    platform_id=job.platform_id,
                    grant=AccessGrant(grant),
                    attempt=job.attempts,
                    pending_since=job.pending_since,
                )
                outcome = await job_calls.call(driver, deps.vault, job, ctx, new_grant)
                if ctx.renewed.grant is not None and isinstance(outcome, Success):
                    # The call changed the grant (the sandbox keeps a switch in it): keep that one.
                    secret = ctx.renewed.grant.secret
                    outcome.new_grant = grants.NewGrant(job.account_id, secret, job.grant_sealed)
                return outcome
        except JobPending as pending:
            return Pending(pending.retry_after, new_grant)
        except PlatformError as exc:
            if exc.transient:
                return self._retry_or_fail(job, exc.code, exc.message)
            return Failure(exc.code, exc.message)
        except TimeoutError:
            return self._retry_or_fail(
                job, common_pb2.JOB_ERROR_CODE_TIMEOUT, "the platform did not answer in time"
            )
