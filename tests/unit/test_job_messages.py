"""jobs.to_proto sets, field by field and in place, exactly the Job that building it with keyword
arguments gives (what it did before it filled a list's elements in place: ListJobs' hot path)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from typing import Any

import pytest
from paylink.v1 import common_pb2, job_pb2

from service import jobs, queue, timeutil

CREATED = dt.datetime(2026, 11, 30, 19, 5, 7, 123456, tzinfo=dt.UTC)
PARAMS = (
    b"",
    common_pb2.JobParams(paystubs=common_pb2.PaystubsParams(count=3)).SerializeToString(),
)
TAGS = ("{}", json.dumps({"team": "payroll", "cohort": "b"}))


def reference(row: dict[str, Any]) -> job_pb2.Job:
    """The Job as built before: keyword arguments, then the timestamps."""
    job = job_pb2.Job(
        id=str(row["id"]),
        account_id=str(row["account_id"]),
        link_token_id=str(row["link_token_id"]) if row["link_token_id"] else "",
        link_session_id=str(row["link_session_id"]) if row["link_session_id"] else "",
        name=row["name"],
        status=queue.JobStatus(row["status"]).to_proto(),
        outcome=row["outcome"],
        error_type=row["error_type"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        params=common_pb2.JobParams.FromString(bytes(row["params"])),
        attempts=row["attempts"],
        origin=row["origin"],
        tags=json.loads(row["tags"]),
        scheduled=row["scheduled"],
    )
    timeutil.set_ts(job.created_at, row["created_at"])
    timeutil.set_ts(job.completed_at, row["completed_at"])
    return job


def rows() -> list[dict[str, Any]]:
    out = []
    for status, params, tags, linked, done in itertools.product(
        queue.JobStatus, PARAMS, TAGS, (False, True), (False, True)
    ):
        final = status in (queue.JobStatus.SUCCESS, queue.JobStatus.ERROR)
        out.append(
            {
                "id": uuid.uuid4(),
                "account_id": uuid.uuid4(),
                "link_token_id": uuid.uuid4() if linked else None,
                "link_session_id": uuid.uuid4() if linked else None,
                "name": common_pb2.JOB_NAME_PAYSTUBS,
                "status": status.value,
                "outcome": common_pb2.JOB_OUTCOME_ERROR if status is queue.JobStatus.ERROR else 0,
                "error_type": common_pb2.JOB_ERROR_TYPE_PLATFORM if status is queue.JobStatus.ERROR else 0,
                "error_code": 0,
                "error_message": "the platform is down" if status is queue.JobStatus.ERROR else "",
                "params": params,
                "attempts": 2 if final else 0,
                "origin": common_pb2.JOB_ORIGIN_REFRESH if done else common_pb2.JOB_ORIGIN_LINK,
                "tags": tags,
                "scheduled": done,
                "created_at": CREATED,
                "completed_at": CREATED + dt.timedelta(seconds=3) if done else None,
            }
        )
    return out


@pytest.mark.parametrize("row", rows(), ids=lambda r: f"{r['status']}-{len(r['params'])}-{len(r['tags'])}")
def test_a_job_message_is_the_one_keyword_arguments_build(row: dict[str, Any]) -> None:
    expected = reference(row)
    built = jobs.to_proto(row)  # type: ignore[arg-type]  # a Record is read by column name only
    assert built == expected
    assert built.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)
    assert built.HasField("params") and built.HasField("created_at")
    assert built.HasField("completed_at") == (row["completed_at"] is not None)


def test_a_page_filled_in_place_is_the_page_built_from_messages() -> None:
    page = rows()
    response = job_pb2.ListJobsResponse()
    for row in page:
        jobs.to_proto(row, response.jobs.add())  # type: ignore[arg-type]
    expected = job_pb2.ListJobsResponse(jobs=[reference(row) for row in page])
    assert response.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)
