"""CatalogService: platforms and employers searched without any Link session, through gRPC."""

from __future__ import annotations

import grpc
from paylink.v1 import catalog_pb2
from paylink.v1 import common_pb2 as c

from tests.harness import Client, rpc_error, violation_fields

C = catalog_pb2


async def test_list_platforms_by_jobs_and_query_without_a_session(client: Client) -> None:
    md = client.md()
    everything = await client.catalog.ListPlatforms(C.ListPlatformsRequest(), metadata=md)
    names = [p.name for p in everything.platforms]
    assert names == sorted(names, key=str.casefold) and len(names) == 5 and everything.next_page_token == ""
    adp = next(p for p in everything.platforms if p.id == "sandbox_adp")
    assert list(adp.supported_jobs) == list(range(1, 10))  # identity .. documents
    shifts = await client.catalog.ListPlatforms(
        C.ListPlatformsRequest(supported_jobs=[c.JOB_NAME_SHIFTS, c.JOB_NAME_TAX_FORMS]), metadata=md
    )
    assert "sandbox_workday" not in {p.id for p in shifts.platforms}  # Workday keeps no shifts
    assert {"sandbox_adp", "sandbox_gig"} <= {p.id for p in shifts.platforms}
    gig = await client.catalog.ListPlatforms(C.ListPlatformsRequest(query="  GIG "), metadata=md)
    assert [p.id for p in gig.platforms] == ["sandbox_gig"]
    assert c.JOB_NAME_EMPLOYMENT not in gig.platforms[0].supported_jobs
    one = await client.catalog.GetPlatform(C.GetPlatformRequest(platform_id="sandbox_gig"), metadata=md)
    assert one == gig.platforms[0]


async def test_platform_pages_walk_everything_once(client: Client) -> None:
    seen, token, pages = [], "", 0
    while True:
        page = await client.catalog.ListPlatforms(
            C.ListPlatformsRequest(page_size=2, page_token=token), metadata=client.md()
        )
        seen += [p.id for p in page.platforms]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 5
    # A token is bound to its filters.
    first = await client.catalog.ListPlatforms(C.ListPlatformsRequest(page_size=2), metadata=client.md())
    exc = await rpc_error(
        client.catalog.ListPlatforms(
            C.ListPlatformsRequest(page_size=2, page_token=first.next_page_token, query="a"),
            metadata=client.md(),
        )
    )
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["page_token"]


async def test_search_get_and_lookup_employers(client: Client) -> None:
    md = client.md()
    found = await client.catalog.SearchEmployers(
        C.SearchEmployersRequest(query="logistics NORTHWIND"), metadata=md
    )
    assert [e.name for e in found.employers] == ["Northwind Logistics Inc."]
    employer = found.employers[0]
    assert employer.platform_id == "sandbox_adp" and employer.platform_name == "ADP (Sandbox)"
    assert len(employer.ein) == 10 and employer.ein[2] == "-" and employer.address.country == "US"
    on_workday = await client.catalog.SearchEmployers(
        C.SearchEmployersRequest(platform_id="sandbox_workday"), metadata=md
    )
    assert on_workday.employers and {e.platform_id for e in on_workday.employers} == {"sandbox_workday"}
    everyone = await client.catalog.SearchEmployers(C.SearchEmployersRequest(page_size=100), metadata=md)
    assert len(everyone.employers) == 11
    got = await client.catalog.GetEmployer(C.GetEmployerRequest(employer_id=employer.id), metadata=md)
    assert got == employer
    for ein in (employer.ein, employer.ein.replace("-", ""), f"  {employer.ein} "):
        assert await client.catalog.LookupEmployer(C.LookupEmployerRequest(ein=ein), metadata=md) == employer


async def test_catalogue_errors_are_precise(client: Client, other_client: Client) -> None:
    md = client.md()
    exc = await rpc_error(
        client.catalog.GetPlatform(C.GetPlatformRequest(platform_id="sandbox_nope"), metadata=md)
    )
    assert exc.code() == grpc.StatusCode.NOT_FOUND
    exc = await rpc_error(client.catalog.GetPlatform(C.GetPlatformRequest(), metadata=md))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["platform_id"]
    exc = await rpc_error(
        client.catalog.GetEmployer(C.GetEmployerRequest(employer_id="emp_nobody"), metadata=md)
    )
    assert exc.code() == grpc.StatusCode.NOT_FOUND
    exc = await rpc_error(
        client.catalog.LookupEmployer(C.LookupEmployerRequest(ein="99-0000000"), metadata=md)
    )
    assert exc.code() == grpc.StatusCode.NOT_FOUND
    for bad in ("", "12-345678", "1234567890", "ab-cdefghi"):
        exc = await rpc_error(client.catalog.LookupEmployer(C.LookupEmployerRequest(ein=bad), metadata=md))
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and violation_fields(exc) == ["ein"]
    exc = await rpc_error(
        client.catalog.SearchEmployers(
            C.SearchEmployersRequest(query="x" * 101, platform_id="sandbox_nope"), metadata=md
        )
    )
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violation_fields(exc) == ["query", "platform_id"]
    exc = await rpc_error(
        client.catalog.ListPlatforms(
            C.ListPlatformsRequest(
                supported_jobs=[c.JOB_NAME_SHIFTS, c.JOB_NAME_SHIFTS, c.JobName.ValueType(99)]
            ),
            metadata=md,
        )
    )
    assert violation_fields(exc) == ["supported_jobs[1]", "supported_jobs[2]"]
    exc = await rpc_error(client.catalog.ListPlatforms(C.ListPlatformsRequest()))  # no secret
    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
    # The catalogue is the same for every workspace.
    assert await other_client.catalog.ListPlatforms(C.ListPlatformsRequest(), metadata=other_client.md()) == (
        await client.catalog.ListPlatforms(C.ListPlatformsRequest(), metadata=md)
    )
