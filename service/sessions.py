"""Link sessions: the RPCs of LinkService, carried out with the state machine
(`session_machine.py`), its store (`session_store.py`), accounts and the job queue.

Every call that changes a session runs in one unit of work holding the session row lock, across
the platform call too: concurrent calls on one session are serialized, so one login creates one
account and one set of jobs. A bound (On Demand Updates) session re-accesses its account with the
stored grant first and keeps the same account id even when the user has to type credentials again.
"""

from __future__ import annotations

import json
import uuid

from paylink.v1 import common_pb2, link_pb2

from service import (
    accounts,
    db,
    errors,
    ids,
    jobs,
    link_tokens,
    queue,
    session_store,
    settlement,
    timeutil,
    uow,
    validation,
)
from service import session_machine as machine
from service.deps import Deps
from service.drivers import base
from service.session_machine import State
from service.session_store import Stored

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


async def start(deps: Deps, workspace_id: uuid.UUID, token: str) -> link_pb2.LinkSession:
    async with uow.begin(deps) as work:
        used = await link_tokens.use_for_session(work.conn, workspace_id, token)
        platform_id = used.platform_id
        if used.bound_account_id is not None:
            platform_id = await accounts.platform_of(work.conn, used.bound_account_id) or platform_id
        terms = machine.Terms(used.required_jobs, used.api_version, used.end_user_id, used.allocation_targets)
        session = machine.new(ids.new_id(), workspace_id, used.id, terms, platform_id, used.bound_account_id)
        session = await session_store.insert(work.conn, session)
    if not session.on_demand:
        async with deps.pool.acquire() as conn:
            return await to_proto(conn, session)
    async with uow.begin(deps) as work:
        session = await _reaccess(deps, work, workspace_id, session.id)
        # Read before commit: the reply shows the state this call produced (JOBS_RUNNING), not a
        # later one that a fast worker already moved the session to.
        return await to_proto(work.conn, session)


async def _reaccess(
    deps: Deps, work: uow.UnitOfWork, workspace_id: uuid.UUID, session_id: uuid.UUID
) -> machine.Session:
    """Bound session: log in with the stored grant. No grant, or a dead one: ask for credentials."""
    stored = await session_store.load(work.conn, workspace_id, str(session_id), lock=True)
    session = stored.session
    assert session.account_id is not None  # a bound session
    grant = await accounts.load_grant(deps, work.conn, session.account_id)
    if grant is None:
        return session
    driver = deps.drivers.driver_for(session.platform_id)
    try:
        result = await driver.reaccess(str(session.account_id), session.platform_id, base.AccessGrant(grant))
    except base.PlatformError as exc:
        failed = machine.login_failed(
            session, exc.code, max_attempts=deps.settings.max_login_attempts, counts=False, reaccess=True
        )
        return await _apply(deps, work, stored, failed)
    return await _apply(deps, work, stored, _login_result(session, result, reaccess=True))


def _login_result(
    session: machine.Session, result: base.LoginResult, *, reaccess: bool
) -> machine.Transition:
    if isinstance(result, base.MfaChallenge):
        return machine.mfa_challenged(session, result.type, result.prompt, result.state, reaccess=reaccess)
    return machine.logged_in(session, result.grant.secret, ids.new_id())


async def submit_credentials(
    deps: Deps, workspace_id: uuid.UUID, request: link_pb2.SubmitCredentialsRequest
) -> link_pb2.LinkSession:
    v = errors.Violations()
    if not request.session_id:
        v.add("session_id", "is required")
    if not 1 <= len(request.username) <= 255:
        v.add("username", "must be 1 to 255 characters")
    if not 1 <= len(request.password) <= 255:
        v.add("password", "must be 1 to 255 characters")
    v.raise_if_any()
    async with uow.begin(deps) as work:
        stored = await session_store.load(work.conn, workspace_id, request.session_id, lock=True)
        session = stored.session
        machine.expect(session, State.CREDENTIALS_REQUIRED)
        platform_id = machine.resolve_platform(session, request.platform_id, deps.drivers.platform)
        fingerprint = machine.login_fingerprint(platform_id, request.username)
        known = None
        if session.account_id is not None and session.on_demand:
            known = await accounts.login_fingerprint(work.conn, session.account_id)
        other_login = machine.another_login(session, fingerprint, known)
        session = machine.credentials_submitted(session, platform_id, fingerprint, known)
        driver = deps.drivers.driver_for(platform_id)
        try:
            result = await driver.login(platform_id, base.Credentials(request.username, request.password))
        except base.PlatformError as exc:
            code = common_pb2.JOB_ERROR_CODE_INVALID_CREDENTIALS if other_login else exc.code
            step = machine.login_failed(session, code, max_attempts=deps.settings.max_login_attempts)
        else:
            if other_login:  # answered as a wrong password, whatever the platform said
                step = machine.login_failed(
                    session,
                    common_pb2.JOB_ERROR_CODE_INVALID_CREDENTIALS,
                    max_attempts=deps.settings.max_login_attempts,
                )
            else:
                step = _login_result(session, result, reaccess=False)
        # Before commit: see start.
        return await to_proto(work.conn, await _apply(deps, work, stored, step))


async def submit_mfa(
    deps: Deps, workspace_id: uuid.UUID, request: link_pb2.SubmitMfaRequest
) -> link_pb2.LinkSession:
    v = errors.Violations()
    if not request.session_id:
        v.add("session_id", "is required")
    if not 1 <= len(request.answer) <= 255:
        v.add("answer", "must be 1 to 255 characters")
    v.raise_if_any()
    async with uow.begin(deps) as work:
        stored = await session_store.load(work.conn, workspace_id, request.session_id, lock=True)
        session = stored.session
        machine.expect(session, State.MFA_REQUIRED)
        assert session.mfa is not None
        state = session_store.open_mfa_state(deps.vault, stored)
        driver = deps.drivers.driver_for(session.platform_id)
        try:
            result = await driver.answer_mfa(session.platform_id, state, request.answer)
        except base.PlatformError as exc:
            step = machine.login_failed(session, exc.code, max_attempts=deps.settings.max_login_attempts)
        else:
            step = _login_result(session, result, reaccess=session.mfa.reaccess)
        # Before commit: see start.
        return await to_proto(work.conn, await _apply(deps, work, stored, step))


async def choose_allocation(
    deps: Deps, workspace_id: uuid.UUID, request: link_pb2.ChooseAllocationRequest
) -> link_pb2.LinkSession:
    async with uow.begin(deps) as work:
        stored = await session_store.load(work.conn, workspace_id, request.session_id, lock=True)
        offered = session_store.offered_allocation(deps.vault, stored)
        machine.can_choose(stored.session, offered is not None and bool(stored.token.allocation.targets))
        assert offered is not None
        choice = machine.choose_allocation(offered, request.target_index, request.type, request.value)
        step = machine.allocation_chosen(stored.session)
        # Before commit: see start.
        return await to_proto(work.conn, await _apply(deps, work, stored, step, chosen=choice))


async def _apply(
    deps: Deps,
    work: uow.UnitOfWork,
    stored: Stored,
    step: machine.Transition,
    *,
    chosen: common_pb2.Allocation | None = None,
) -> machine.Session:
    """Carries out a transition's effects in order, then saves the new snapshot."""
    session = step.session
    mfa_state: bytes | None = None
    for effect in step.effects:
        if isinstance(effect, machine.ConnectAccount):
            await _connect(deps, work, session, effect)
        elif isinstance(effect, machine.KeepMfaState):
            mfa_state = effect.state
        elif isinstance(effect, machine.CredentialsExpired):
            assert session.account_id is not None
            account = await accounts.fetch(
                work.conn, session.workspace_id, str(session.account_id), lock=True
            )
            await accounts.set_monitoring(
                work,
                account,
                "user_action_required",
                "credentials_expired",
                api_version=session.terms.api_version,
            )
    saved = await session_store.save(work.conn, deps.vault, session, mfa_state=mfa_state, chosen=chosen)
    for effect in step.effects:  # these need the saved session (jobs reference it)
        if isinstance(effect, machine.StartJobs):
            await _start_jobs(deps, work, stored, saved, chosen)
        elif isinstance(effect, machine.Settle):
            await _settle_without_jobs(work, saved)
    return saved


async def _connect(
    deps: Deps, work: uow.UnitOfWork, session: machine.Session, effect: machine.ConnectAccount
) -> None:
    """Creates the account (or re-links the bound one) and stores the grant."""
    terms = session.terms
    if effect.new:
        await accounts.create(
            work,
            account_id=effect.account_id,
            workspace_id=session.workspace_id,
            end_user_id=terms.end_user_id,
            platform_id=session.platform_id,
            link_token_id=session.link_token_id,
            login_fingerprint=session.login_fingerprint,
            api_version=terms.api_version,
        )
    else:
        await accounts.relink(
            work, session.workspace_id, effect.account_id, session.login_fingerprint, terms.api_version
        )
    await accounts.store_grant(deps, work.conn, effect.account_id, effect.grant)


async def _start_jobs(
    deps: Deps,
    work: uow.UnitOfWork,
    stored: Stored,
    session: machine.Session,
    chosen: common_pb2.Allocation | None,
) -> None:
    assert session.account_id is not None
    switching = session.terms.switching
    for name in session.terms.required_jobs:
        params = common_pb2.JobParams()
        secret: bytes | None = None
        if name == common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH:
            allocation = chosen or session_store.chosen_allocation(deps.vault, stored)
            allocation = allocation or session_store.offered_allocation(deps.vault, stored)
            assert allocation is not None  # a switch token always carries an allocation
            params.direct_deposit_switch.CopyFrom(_switch_params(stored, allocation))
            secret = _switch_secret(allocation)
        await jobs.enqueue(
            deps,
            work.conn,
            workspace_id=session.workspace_id,
            account_id=session.account_id,
            platform_id=session.platform_id,
            name=name,
            origin=common_pb2.JOB_ORIGIN_LINK,
            batch_id=session.id,
            api_version=session.terms.api_version,
            params=params,
            secret_params=secret,
            link_token_id=session.link_token_id,
            link_session_id=session.id,
            # The allocations job reads what the switch is about to change: it waits for the switch,
            # so the stored allocations end as the platform shows them after it.
            held=switching and name == common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS,
        )


async def _settle_without_jobs(work: uow.UnitOfWork, session: machine.Session) -> None:
    assert session.account_id is not None
    at = session.completed_at or timeutil.now()
    settlement.publish(
        work,
        settlement.Settlement(
            workspace_id=session.workspace_id,
            account_id=session.account_id,
            end_user_id=session.terms.end_user_id,
            session_id=session.id,
            link_token_id=session.link_token_id,
            origin=common_pb2.JOB_ORIGIN_LINK,
            api_version=session.terms.api_version,
            jobs=[],
            at=at,
        ),
    )


def _switch_params(stored: Stored, chosen: common_pb2.Allocation) -> common_pb2.SwitchParams:
    masked = validation.masked_allocation(
        common_pb2.Allocation(type=chosen.type, value=chosen.value, targets=chosen.targets[:1])
    )
    splitting_disabled = stored.token.disable_direct_deposit_splitting
    action = machine.switch_action(chosen, splitting_disabled)
    return common_pb2.SwitchParams(
        action=action,  # type: ignore[arg-type]
        allocation=masked,
        splitting_disabled=splitting_disabled,
    )


def _switch_secret(chosen: common_pb2.Allocation) -> bytes:
    target = chosen.targets[0]
    return json.dumps(
        {
            "type": target.type,
            "routing_number": target.routing_number,
            "account_number": target.account_number,
            "name": target.name,
        }
    ).encode()
