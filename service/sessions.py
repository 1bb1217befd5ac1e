"""Link sessions: the RPCs of LinkService, carried out with the state machine
(`session_machine.py`), its store (`session_store.py`), its effects (`session_effects.py`) and the
logins in flight (`logins.py`).

No connection, transaction or row lock is held across a platform call. A call that logs in commits
the session AUTHENTICATING first (a short transaction under the session row lock: concurrent
submissions have exactly one winner), then the platform call runs in a background task with no
connection held, and its outcome is committed with a compare-and-set on the session's version.
The caller gets the outcome if it comes before its deadline, else the session AUTHENTICATING; the
login finishes anyway. A bound (On Demand Updates) session re-accesses its account with the stored
grant first and keeps the same account id even when the user has to type credentials again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from paylink.v1 import common_pb2, link_pb2

from service import (
    accounts,
    db,
    errors,
    grants,
    ids,
    link_tokens,
    queue,
    session_effects,
    session_store,
    timeutil,
    uow,
)
from service import session_machine as machine
from service.context import CallContext
from service.deps import Deps
from service.drivers import base
from service.logins import Done, LoginRunner, PlatformCall
from service.session_machine import State
from service.session_store import Stored
from service.session_watch import SessionWatcher

# States in which a session has jobs to show.
_WITH_JOBS = frozenset({State.JOBS_RUNNING, State.COMPLETED})


async def to_proto(conn: db.Executor, session: machine.Session) -> link_pb2.LinkSession:
    reply = link_pb2.LinkSession(
        id=str(session.id),
        link_token_id=str(session.link_token_id),
        state=session.state.to_proto(),
        required_jobs=list(session.terms.required_jobs),  # type: ignore[arg-type]
        account_id=str(session.account_id) if session.account_id else "",
        platform_id=session.platform_id,
        last_error=session.last_error,  # type: ignore[arg-type]
        failed_attempts=session.failed_attempts,
        failure_reason=int(session.failure_reason),  # type: ignore[arg-type]
        on_demand_update=session.on_demand,
        allocation_choice_required=session.choice_pending,
    )
    if session.state == State.MFA_REQUIRED and session.mfa is not None:
        reply.mfa.CopyFrom(link_pb2.MfaChallenge(type=session.mfa.type, prompt=session.mfa.prompt))
    timeutil.set_ts(reply.created_at, session.created_at)
    timeutil.set_ts(reply.updated_at, session.updated_at)
    timeutil.set_ts(reply.expires_at, session.expires_at)
    if session.state in _WITH_JOBS:  # jobs exist from JOBS_RUNNING on
        for job in await queue.batch(conn, session.id, session_only=True):
            reply.jobs.append(
                link_pb2.SessionJob(
                    job_id=str(job.id),
                    name=job.name,  # type: ignore[arg-type]
                    status=job.status.to_proto(),
                    outcome=job.outcome,  # type: ignore[arg-type]
                )
            )
    return reply


async def get(deps: Deps, workspace_id: uuid.UUID, session_id: str) -> link_pb2.LinkSession:
    async with deps.pool.acquire() as conn:
        return await to_proto(conn, (await session_store.load(conn, workspace_id, session_id)).session)


async def search_platforms(
    deps: Deps, workspace_id: uuid.UUID, request: link_pb2.SearchPlatformsRequest
) -> link_pb2.SearchPlatformsResponse:
    """The platforms that support every required job (only its own for a bound session)."""
    if len(request.query) > 100:
        raise errors.invalid_field("query", "must be at most 100 characters")
    async with deps.pool.acquire() as conn:
        session = (await session_store.load(conn, workspace_id, request.session_id)).session
    needed = set(session.terms.required_jobs)
    query = request.query.strip().lower()
    return link_pb2.SearchPlatformsResponse(
        platforms=[
            link_pb2.Platform(
                id=p.id,
                name=p.name,
                supported_jobs=sorted(p.supported_jobs),  # type: ignore[arg-type]
                always_mfa=p.always_mfa,
            )
            for p in deps.drivers.platforms()
            if needed <= p.supported_jobs
            and (query in p.name.lower() or query in p.id)
            and (not session.on_demand or p.id == session.platform_id)
        ]
    )


async def _reply(deps: Deps, session: machine.Session) -> link_pb2.LinkSession:
    if session.state not in _WITH_JOBS:  # nothing to read: no trip to the pool
        return await to_proto(deps.pool, session)
    async with deps.pool.acquire() as conn:
        return await to_proto(conn, session)


async def _login_reply(
    deps: Deps, logins: LoginRunner, task: asyncio.Task[Done], begun: machine.Session, call: CallContext
) -> link_pb2.LinkSession:
    """The login's outcome if it came before the caller's deadline, else the session AUTHENTICATING."""
    reply = await logins.outcome(task, call)
    return reply if reply is not None else await _reply(deps, begun)


async def start(deps: Deps, logins: LoginRunner, call: CallContext, token: str) -> link_pb2.LinkSession:
    """StartSession: idempotent per token (a retry returns the token's session)."""
    grant: bytes | None = None
    digest: bytes | None = None
    async with logins.writes, uow.begin(deps) as work:
        use = await link_tokens.lock_for_session(work.conn, call.workspace.id, token)
        if use.used:
            existing = await session_store.of_token(work.conn, use.id)
            if existing is None:
                raise errors.failed_precondition(
                    "LINK_TOKEN_USED", "this link token already started a session"
                )
            stored = await session_store.load(work.conn, call.workspace.id, str(existing))
            if stored.session.failure_reason != machine.FailureReason.EXPIRED:
                return await to_proto(work.conn, stored.session)  # the same session, for a retry
        if use.expired:
            raise errors.failed_precondition("LINK_TOKEN_EXPIRED", "this link token has expired")
        platform_id = use.platform_id
        if use.bound_account_id is not None:
            platform_id, connected = await accounts.platform_and_connected(work.conn, use.bound_account_id)
            if not connected:
                raise errors.failed_precondition(
                    "ACCOUNT_DISCONNECTED",
                    "the link token's account was disconnected; disconnecting is final",
                )
            grant = await grants.load(deps, work.conn, use.bound_account_id)
            # What the re-access starts from, kept (as a keyed digest) to store its grant only if
            # the stored one has not changed meanwhile (grants.store_unless_changed).
            digest = None if grant is None else grants.digest(deps, use.bound_account_id, grant)
        await link_tokens.mark_used(work.conn, use.id)
        terms = machine.Terms(use.required_jobs, use.api_version, use.end_user_id, use.allocation_targets)
        session = machine.new(
            ids.new_id(), call.workspace.id, use.id, terms, platform_id, use.bound_account_id
        )
        if grant is not None:  # a bound session with stored credentials: re-access right away
            session = machine.begin_login(session, machine.Login.REACCESS, grant_digest=digest)
        session = await session_store.insert(work.conn, session, deps.settings.link_session_ttl, logins.lease)
    if grant is None:
        return await _reply(deps, session)
    driver = deps.drivers.driver_for(session.platform_id)
    access = base.AccessGrant(grant)
    account_id = str(session.account_id)
    task = logins.start(session, lambda: driver.reaccess(account_id, session.platform_id, access))
    return await _login_reply(deps, logins, task, session, call)


async def submit_credentials(
    deps: Deps, logins: LoginRunner, call: CallContext, request: link_pb2.SubmitCredentialsRequest
) -> link_pb2.LinkSession:
    v = errors.Violations()
    if not request.session_id:
        v.add("session_id", "is required")
    if not 1 <= len(request.username) <= 255:
        v.add("username", "must be 1 to 255 characters")
    if not 1 <= len(request.password) <= 255:
        v.add("password", "must be 1 to 255 characters")
    v.raise_if_any()
    other_login = False
    async with logins.writes, uow.begin(deps) as work:
        stored = await session_store.load(work.conn, call.workspace.id, request.session_id, lock=True)
        if await _expired(deps, work, stored):
            begun = None
        else:
            session = stored.session
            machine.expect(session, State.CREDENTIALS_REQUIRED)
            platform_id = machine.resolve_platform(session, request.platform_id, deps.drivers.platform)
            fingerprint = machine.login_fingerprint(platform_id, request.username)
            known = None
            if session.account_id is not None and session.on_demand:
                known = await accounts.login_fingerprint(work.conn, session.account_id)
            other_login = machine.another_login(session, fingerprint, known)
            session = machine.credentials_submitted(session, platform_id, fingerprint, known)
            begun = machine.begin_login(session, machine.Login.CREDENTIALS)
            begun = await session_effects.apply(
                deps, work, stored, machine.Transition(begun), lease=logins.lease
            )
    if begun is None:
        raise _expired_error()
    driver = deps.drivers.driver_for(begun.platform_id)
    credentials = base.Credentials(request.username, request.password)
    login: PlatformCall = lambda: driver.login(begun.platform_id, credentials)  # noqa: E731
    task = logins.start(begun, _as_wrong_password(login) if other_login else login)
    return await _login_reply(deps, logins, task, begun, call)


def _as_wrong_password(login: PlatformCall) -> PlatformCall:
    """Another login than the bound account's (machine.another_login): after the same platform
    call, answered exactly as a wrong password, so a session cannot tell which username the account
    has; a platform that is down is still retried and reported as such."""

    async def call() -> base.LoginResult:
        try:
            await login()
        except base.PlatformError as exc:
            if exc.code in machine.TRANSIENT_ERRORS:
                raise
        raise base.PlatformError(
            common_pb2.JOB_ERROR_CODE_INVALID_CREDENTIALS, "Invalid username or password"
        )

    return call


async def submit_mfa(
    deps: Deps, logins: LoginRunner, call: CallContext, request: link_pb2.SubmitMfaRequest
) -> link_pb2.LinkSession:
    v = errors.Violations()
    if not request.session_id:
        v.add("session_id", "is required")
    if not 1 <= len(request.answer) <= 255:
        v.add("answer", "must be 1 to 255 characters")
    v.raise_if_any()
    async with logins.writes, uow.begin(deps) as work:
        stored = await session_store.load(work.conn, call.workspace.id, request.session_id, lock=True)
        if await _expired(deps, work, stored):
            begun = None
        else:
            machine.expect(stored.session, State.MFA_REQUIRED)
            state = session_store.open_mfa_state(deps.vault, stored)
            begun = machine.begin_login(stored.session, machine.Login.MFA)
            begun = await session_effects.apply(
                deps, work, stored, machine.Transition(begun), lease=logins.lease
            )
    if begun is None:
        raise _expired_error()
    driver = deps.drivers.driver_for(begun.platform_id)
    task = logins.start(begun, lambda: driver.answer_mfa(begun.platform_id, state, request.answer))
    return await _login_reply(deps, logins, task, begun, call)


async def choose_allocation(
    deps: Deps, workspace_id: uuid.UUID, request: link_pb2.ChooseAllocationRequest
) -> link_pb2.LinkSession:
    async with uow.begin(deps) as work:
        stored = await session_store.load(work.conn, workspace_id, request.session_id, lock=True)
        if await _expired(deps, work, stored):
            reply = None
        else:
            if stored.session.failure_reason == machine.FailureReason.EXPIRED:
                raise _expired_error()
            offered = session_store.offered_allocation(deps.vault, stored)
            machine.can_choose(stored.session, offered is not None and bool(stored.token.allocation.targets))
            assert offered is not None
            choice = machine.choose_allocation(offered, request.target_index, request.type, request.value)
            step = machine.allocation_chosen(stored.session)
            saved = await session_effects.apply(deps, work, stored, step, chosen=choice)
            reply = await to_proto(work.conn, saved)  # before commit: the state this call produced
    if reply is None:
        raise _expired_error()
    return reply


async def _expired(deps: Deps, work: uow.UnitOfWork, stored: Stored) -> bool:
    """Ends an expired session (committed with the unit of work); True when it did."""
    step = machine.expire(stored.session, timeutil.now())
    if step is None:
        return False
    await session_effects.apply(deps, work, stored, step)
    return True


def _expired_error() -> errors.FailedPrecondition:
    return errors.failed_precondition("SESSION_EXPIRED", "the session expired", state=State.FAILED)


async def watch(
    deps: Deps, watcher: SessionWatcher, workspace_id: uuid.UUID, session_id: str
) -> AsyncIterator[link_pb2.LinkSession]:
    """The session now, then at every state change until it is COMPLETED or FAILED. Holds no
    connection while it waits: one LISTEN connection per process wakes every watcher."""
    parsed = ids.parse_uuid(session_id)
    if parsed is None:
        raise errors.not_found("link_session", session_id)
    with watcher.subscribe(parsed) as changed:
        sent: int | None = None
        while True:
            changed.clear()
            async with deps.pool.acquire() as conn:
                session = (await session_store.load(conn, workspace_id, session_id)).session
                reply = await to_proto(conn, session) if session.version != sent else None
            if reply is not None:
                yield reply
                sent = session.version
            if session.state.terminal:
                return
            await watcher.wait(changed)
