"""Who is calling: the workspace of a call's API secret, its `api-version` and its audit caller.

Every paylink.v1 call sends the same three metadata values as the last one from the same client,
so each (secret, api-version, x-caller) is parsed once and reused until the secret's own
validation expires (service/auth.py: `Authenticator.validated`, `cache_ttl`, 5 s by default). A
reused answer never outlives that validation: a revoked or rotated-out secret, or one of a deleted
workspace, stops working within the TTL of its last check against the database, exactly as without
this cache (tests/integration/test_callers.py). Failures are not cached. Entries are keyed by the
secret as the caller sent it (hashing it on every call would cost more than the rest of this
lookup); an expired entry is dropped when it is next looked up, and the whole cache when it holds
`limit` entries.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

from service import audit, errors, ids, versions
from service.auth import Authenticator, Workspace

API_SECRET = "x-api-secret"  # noqa: S105 - a metadata key, not a secret
API_VERSION = "api-version"


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    workspace: Workspace
    api_version: dt.date | None
    caller: str  # for the audit trail: x-caller, else "key:<key id>"
    key_id: str  # the public key id of the API secret


class Callers:
    """The parsed callers of recent calls, each until its secret's validation expires."""

    def __init__(self, auth: Authenticator, limit: int = 10_000) -> None:
        self._auth = auth
        self._clock = auth.clock
        self._limit = limit
        self._cache: dict[tuple[str | None, str | None, str | None], tuple[float, Caller]] = {}

    def cached(self, metadata: Mapping[str, str]) -> Caller | None:
        """The caller `of` would answer, when its entry is still valid; else None (then `of` must be
        awaited). A plain function: a call that finds its caller here awaits nothing for it."""
        hit = self._cache.get(
            (metadata.get(API_SECRET), metadata.get(API_VERSION), metadata.get(audit.X_CALLER))
        )
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        return None

    async def of(self, metadata: Mapping[str, str]) -> Caller:
        """Authenticates `x-api-secret` (UNAUTHENTICATED), parses `api-version` and `x-caller`
        (INVALID_ARGUMENT naming the field), in that order."""
        secret = metadata.get(API_SECRET)
        version, who = metadata.get(API_VERSION), metadata.get(audit.X_CALLER)
        key = (secret, version, who) if secret else None
        if key is not None:
            hit = self._cache.get(key)
            if hit is not None:
                if hit[0] > self._clock():
                    return hit[1]
                del self._cache[key]
        workspace, expires = await self._auth.validated(secret)
        try:
            api_version = versions.parse(version)
        except versions.UnknownVersion as exc:
            raise errors.invalid_field(API_VERSION, str(exc)) from exc
        key_id = ids.key_id_of_secret(secret or "") or ""
        try:
            caller = audit.caller_of(who, key_id)
        except ValueError as exc:
            raise errors.invalid_field(audit.X_CALLER, str(exc)) from exc
        found = Caller(workspace, api_version, caller, key_id)
        if key is not None:
            if len(self._cache) >= self._limit:
                self._cache.clear()
            self._cache[key] = (expires, found)
        return found
