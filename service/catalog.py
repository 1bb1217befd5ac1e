"""The catalogue: platforms and employers a caller can look up before any Link session.

It reads the driver registry only (no database): platforms with the jobs they support, and the
employers whose payroll each platform runs. Lists are sorted by name and paged with a keyset token
bound to the filters (service/pagination.py).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from typing import TypeVar

from paylink.v1 import catalog_pb2, link_pb2

from service import errors, pagination, validation
from service.drivers.base import EmployerInfo, PlatformInfo
from service.drivers.registry import DriverRegistry

_EIN = re.compile(r"^(\d{2})-?(\d{7})$")
_NO_ID = uuid.UUID(int=0)  # catalogue cursors are keyed by name and id alone
_T = TypeVar("_T")


def platform_proto(p: PlatformInfo) -> link_pb2.Platform:
    return link_pb2.Platform(
        id=p.id,
        name=p.name,
        supported_jobs=sorted(p.supported_jobs),  # type: ignore[arg-type]
        always_mfa=p.always_mfa,
    )


def employer_proto(e: EmployerInfo, drivers: DriverRegistry) -> catalog_pb2.CatalogEmployer:
    platform = drivers.platform(e.platform_id)
    out = catalog_pb2.CatalogEmployer(
        id=e.id,
        name=e.name,
        ein=e.ein,
        platform_id=e.platform_id,
        platform_name=platform.name if platform else e.platform_id,
    )
    out.address.CopyFrom(e.address)
    return out


def _page(
    items: Sequence[_T], key: Callable[[_T], str], page_size: int, page_token: str, filters: object
) -> tuple[list[_T], str]:
    """One page of `items` (already sorted by `key`) after the token's key, and the next token."""
    size = pagination.page_size(page_size)
    cursor = pagination.decode(page_token, filters)
    after = [i for i in items if cursor is None or key(i) > cursor.key]
    page = after[:size]
    token = pagination.encode(pagination.Cursor(key(page[-1]), _NO_ID), filters) if len(after) > size else ""
    return page, token


def _query(v: errors.Violations, value: str) -> str:
    return validation.text(v, "query", value, max_len=100).casefold()


def list_platforms(
    drivers: DriverRegistry, request: catalog_pb2.ListPlatformsRequest
) -> catalog_pb2.ListPlatformsResponse:
    v = errors.Violations()
    query = _query(v, request.query)
    needed = validation.job_names(
        v, "supported_jobs", list(request.supported_jobs), allow_empty=True, known_only=False
    )
    v.raise_if_any()
    matching = [
        p
        for p in drivers.platforms()
        if set(needed) <= p.supported_jobs and (query in p.name.casefold() or query in p.id)
    ]
    filters = {"q": query, "j": sorted(needed)}
    page, token = _page(
        matching, lambda p: f"{p.name.casefold()}\x1f{p.id}", request.page_size, request.page_token, filters
    )
    return catalog_pb2.ListPlatformsResponse(
        platforms=[platform_proto(p) for p in page], next_page_token=token
    )


def get_platform(drivers: DriverRegistry, platform_id: str) -> link_pb2.Platform:
    v = errors.Violations()
    wanted = validation.text(v, "platform_id", platform_id, min_len=1, max_len=100)
    v.raise_if_any()
    platform = drivers.platform(wanted)
    if platform is None:
        raise errors.not_found("platform", wanted)
    return platform_proto(platform)


def search_employers(
    drivers: DriverRegistry, request: catalog_pb2.SearchEmployersRequest
) -> catalog_pb2.SearchEmployersResponse:
    v = errors.Violations()
    words = _query(v, request.query).split()
    platform_id = validation.text(v, "platform_id", request.platform_id, max_len=100)
    if platform_id and drivers.platform(platform_id) is None:
        v.add("platform_id", "is not a known platform id")
    v.raise_if_any()
    matching = [
        e
        for e in drivers.employers()
        if all(w in e.name.casefold() for w in words) and (not platform_id or e.platform_id == platform_id)
    ]
    filters = {"q": words, "p": platform_id}
    page, token = _page(
        matching, lambda e: f"{e.name.casefold()}\x1f{e.id}", request.page_size, request.page_token, filters
    )
    return catalog_pb2.SearchEmployersResponse(
        employers=[employer_proto(e, drivers) for e in page], next_page_token=token
    )


def get_employer(drivers: DriverRegistry, employer_id: str) -> catalog_pb2.CatalogEmployer:
    v = errors.Violations()
    wanted = validation.text(v, "employer_id", employer_id, min_len=1, max_len=255)
    v.raise_if_any()
    employer = drivers.employer(wanted)
    if employer is None:
        raise errors.not_found("employer", wanted)
    return employer_proto(employer, drivers)


def lookup_employer(drivers: DriverRegistry, ein: str) -> catalog_pb2.CatalogEmployer:
    match = _EIN.match(ein.strip())
    if match is None:
        raise errors.invalid_field("ein", "must be nine digits, as NN-NNNNNNN or NNNNNNNNN")
    wanted = f"{match.group(1)}-{match.group(2)}"
    for employer in drivers.employers():
        if employer.ein == wanted:
            return employer_proto(employer, drivers)
    raise errors.not_found("employer", wanted)
