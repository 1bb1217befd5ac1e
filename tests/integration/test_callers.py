"""The parsed-caller cache (service/api/callers.py) never lets a secret outlive its validation.

A clock the test moves stands in for time.monotonic, so nothing here waits or depends on timing.
"""

from __future__ import annotations

import datetime as dt

import pytest

from service import auth, errors, runtime
from service.api.callers import Callers

TTL = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _callers(app: runtime.Running, clock: Clock) -> tuple[auth.Authenticator, Callers]:
    authenticator = auth.Authenticator(app.deps.pool, cache_ttl=TTL, clock=clock)
    return authenticator, Callers(authenticator)


def _md(secret: str, version: str = "2021-07-28", caller: str | None = None) -> dict[str, str]:
    md = {"x-api-secret": secret, "api-version": version}
    if caller is not None:
        md["x-caller"] = caller
    return md


async def test_a_revoked_secret_stops_working_when_its_validation_expires(app: runtime.Running) -> None:
    clock = Clock()
    _, callers = _callers(app, clock)
    workspace, secret = await auth.create_workspace(app.deps.pool, "callers-revoke")
    first = await callers.of(_md(secret))
    assert first.workspace.id == workspace.id
    assert first.api_version == dt.date(2021, 7, 28)
    assert first.key_id and first.caller == f"key:{first.key_id}"

    assert await auth.revoke_secret(app.deps.pool, secret)
    clock.now += TTL - 0.1  # within the documented cache TTL: still the cached answer
    assert (await callers.of(_md(secret))).workspace.id == workspace.id
    clock.now += 0.2  # past it: checked again, and refused
    with pytest.raises(errors.Unauthenticated):
        await callers.of(_md(secret))
    clock.now += 60  # and it stays refused (failures are not cached as successes)
    with pytest.raises(errors.Unauthenticated):
        await callers.of(_md(secret))


async def test_an_entry_parsed_later_expires_with_the_secrets_validation_not_after_it(
    app: runtime.Running,
) -> None:
    """A second api-version or x-caller seen later reuses the secret's validation: its entry must
    expire when that validation does, not a full TTL after it was parsed."""
    clock = Clock()
    _, callers = _callers(app, clock)
    _, secret = await auth.create_workspace(app.deps.pool, "callers-later")
    await callers.of(_md(secret))  # validated at t=0, valid until t=TTL
    clock.now += TTL - 1
    later = await callers.of(_md(secret, caller="payroll-sync"))  # parsed at t=TTL-1
    assert later.caller == "payroll-sync"

    assert await auth.revoke_secret(app.deps.pool, secret)
    clock.now += 1.1  # TTL + 0.1 after the validation, 1.1 s after the later entry was parsed
    with pytest.raises(errors.Unauthenticated):
        await callers.of(_md(secret, caller="payroll-sync"))


async def test_a_rotated_secret_works_at_once_and_the_old_one_stops_with_the_ttl(
    app: runtime.Running,
) -> None:
    clock = Clock()
    _, callers = _callers(app, clock)
    workspace, old = await auth.create_workspace(app.deps.pool, "callers-rotate")
    assert (await callers.of(_md(old))).workspace.id == workspace.id
    new = await auth.create_secret(app.deps.pool, workspace.id)
    assert (await callers.of(_md(new))).workspace.id == workspace.id
    assert await auth.revoke_secret(app.deps.pool, old)
    clock.now += TTL + 0.1
    with pytest.raises(errors.Unauthenticated):
        await callers.of(_md(old))
    assert (await callers.of(_md(new))).workspace.id == workspace.id


async def test_a_deleted_workspaces_secret_stops_with_the_ttl(app: runtime.Running) -> None:
    clock = Clock()
    _, callers = _callers(app, clock)
    workspace, secret = await auth.create_workspace(app.deps.pool, "callers-retire")
    await callers.of(_md(secret))
    async with app.deps.pool.acquire() as conn:
        assert await auth.retire_workspace(conn, workspace.id) == 1
    clock.now += TTL + 0.1
    with pytest.raises(errors.Unauthenticated):
        await callers.of(_md(secret))


async def test_bad_metadata_is_refused_every_time_in_the_documented_order(app: runtime.Running) -> None:
    clock = Clock()
    _, callers = _callers(app, clock)
    _, secret = await auth.create_workspace(app.deps.pool, "callers-bad")
    for _ in range(2):  # the second time too: a refusal is never cached
        with pytest.raises(errors.InvalidArgument) as version:
            await callers.of(_md(secret, version="1999-01-01"))
        assert version.value.violations[0][0] == "api-version"
        with pytest.raises(errors.InvalidArgument) as caller:
            await callers.of(_md(secret, caller="bad caller!"))
        assert caller.value.violations[0][0] == "x-caller"
        # authentication comes first: a bad secret with a bad version is UNAUTHENTICATED
        with pytest.raises(errors.Unauthenticated):
            await callers.of(_md(secret[:-2] + "xx", version="1999-01-01"))
        with pytest.raises(errors.Unauthenticated):
            await callers.of({"api-version": "2021-07-28"})
    # the good metadata still works after the refusals
    assert (await callers.of(_md(secret))).api_version == dt.date(2021, 7, 28)


async def test_the_pipelines_lookup_answers_only_what_of_would_and_never_past_the_validation(
    app: runtime.Running,
) -> None:
    """`cached` (what the call pipeline tries first, without awaiting) finds only an entry `of` made,
    for the same secret, api-version and x-caller, and only until the secret's validation expires;
    after that the pipeline must go through `of`, which checks the secret again."""
    clock = Clock()
    _, callers = _callers(app, clock)
    workspace, secret = await auth.create_workspace(app.deps.pool, "callers-cached")
    assert callers.cached(_md(secret)) is None  # nothing parsed yet
    parsed = await callers.of(_md(secret))
    assert callers.cached(_md(secret)) is parsed
    assert callers.cached(_md(secret, caller="payroll-sync")) is None  # another x-caller: its own entry
    assert callers.cached(_md(secret, version="2020-01-01")) is None
    assert callers.cached({"api-version": "2021-07-28"}) is None  # no secret: never an entry

    assert await auth.revoke_secret(app.deps.pool, secret)
    clock.now += TTL - 0.1
    assert callers.cached(_md(secret)) is parsed  # within the validation's TTL, as `of` answers
    clock.now += 0.2
    assert callers.cached(_md(secret)) is None  # past it: not answered from the cache
    with pytest.raises(errors.Unauthenticated):
        await callers.of(_md(secret))
    assert workspace.id == parsed.workspace.id
