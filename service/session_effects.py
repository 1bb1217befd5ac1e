"""What a Link session's transitions do outside the state machine: connect the account, keep the
MFA state, start the jobs, settle, publish link_session.failed, move a bound account's monitoring
status — then save the new snapshot. Used by the Link RPCs (sessions.py), the logins in flight
(logins.py) and the sweeper of dead logins and expired sessions (session_sweeper.py).
"""

from __future__ import annotations

import json

from paylink.v1 import common_pb2, event_pb2

from service import accounts, grants, jobs, outbox, session_store, settlement, timeutil, uow, validation
from service import session_machine as machine
from service.deps import Deps
from service.monitoring import rules
from service.session_store import Stored


async def apply(
    deps: Deps,
    work: uow.UnitOfWork,
    stored: Stored,
    step: machine.Transition,
    *,
    chosen: common_pb2.Allocation | None = None,
    lease: session_store.Lease | None = None,
) -> machine.Session:
    """Carries out a transition's effects in order, then saves the new snapshot (compare-and-set
    on the version it was loaded at; `lease` while it goes AUTHENTICATING)."""
    session = step.session
    mfa_state: bytes | None = None
    for effect in step.effects:
        if isinstance(effect, machine.ConnectAccount):
            await _connect(deps, work, session, effect)
        elif isinstance(effect, machine.KeepMfaState):
            mfa_state = effect.state
        elif isinstance(effect, machine.CredentialsExpired):
            await _monitoring(work, session, "user_action_required", "credentials_expired")
        elif isinstance(effect, machine.PlatformDown):
            await _platform_down(work, session, effect.code)
    saved = await session_store.save(
        work.conn, deps.vault, session, mfa_state=mfa_state, chosen=chosen, lease=lease
    )
    for effect in step.effects:  # these need the saved session (jobs reference it)
        if isinstance(effect, machine.StartJobs):
            await _start_jobs(deps, work, stored, saved, chosen)
        elif isinstance(effect, machine.Settle):
            _settle_without_jobs(work, saved)
        elif isinstance(effect, machine.Failed):
            publish_failed(work, saved)
    return saved


async def _monitoring(work: uow.UnitOfWork, session: machine.Session, status: str, reason: str) -> None:
    """The bound account's monitoring status follows what its re-access found."""
    assert session.account_id is not None
    account = await accounts.fetch(work.conn, session.workspace_id, str(session.account_id), lock=True)
    await accounts.set_monitoring(work, account, status, reason, api_version=session.terms.api_version)


async def _platform_down(work: uow.UnitOfWork, session: machine.Session, code: int) -> None:
    """A bound account's platform stayed down through the session's retries: the monitoring status
    machine (monitoring/rules.py) decides the account's new status."""
    assert session.account_id is not None
    account = await accounts.fetch(work.conn, session.workspace_id, str(session.account_id), lock=True)
    decision = rules.session_outage(rules.Status(account["monitoring_status"]), code)
    if decision.changed(rules.Status(account["monitoring_status"])) and account["connected"]:
        await accounts.set_monitoring(
            work, account, decision.status.value, decision.reason, api_version=session.terms.api_version
        )


def publish_failed(work: uow.UnitOfWork, session: machine.Session) -> None:
    """link_session.failed: keyed by the account of a bound session, else by the session itself."""
    at = session.completed_at or timeutil.now()
    payload = event_pb2.LinkSessionFailedPayload(
        link_session_id=str(session.id),
        link_token_id=str(session.link_token_id),
        account_id=str(session.account_id) if session.account_id else "",
        end_user_id=session.terms.end_user_id,
        platform_id=session.platform_id,
        failure_reason=int(session.failure_reason),  # type: ignore[arg-type]
        last_error=session.last_error,  # type: ignore[arg-type]
        failed_attempts=session.failed_attempts,
        on_demand_update=session.on_demand,
    )
    timeutil.set_ts(payload.timestamp, at)
    event = event_pb2.Event(link_session_failed=payload)
    name, version = outbox.LINK_SESSION_FAILED, session.terms.api_version
    if session.account_id is not None:
        work.emit(session.workspace_id, session.account_id, name, version, event, at)
    else:
        work.emit_without_account(session.workspace_id, session.id, name, version, event, at)


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
    if effect.unless_changed_from is None:  # a new account, or credentials the user typed: they win
        await grants.store(deps, work.conn, effect.account_id, effect.grant)
    else:  # a re-access: a grant stored while it waited on the platform is newer (grants.py)
        await grants.store_unless_changed(
            deps, work.conn, effect.account_id, effect.grant, effect.unless_changed_from
        )


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
            # The jobs continue the trace (and request id) of the CreateLinkToken call when it had
            # one, so the caller follows its token to the events (docs/spec.md §4).
            traceparent=stored.token_traceparent or None,
            request_id=stored.token_request_id or None,
            # The allocations job reads what the switch is about to change: it waits for the switch,
            # so the stored allocations end as the platform shows them after it.
            held=switching and name == common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS,
        )


def _settle_without_jobs(work: uow.UnitOfWork, session: machine.Session) -> None:
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
