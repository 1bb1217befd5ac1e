"""paylink.v1.JobService."""

from __future__ import annotations

from paylink.v1 import job_pb2, job_pb2_grpc

from service import jobs
from service.api import context
from service.api.ratelimit import RateLimiter
from service.deps import Deps


class JobServicer(job_pb2_grpc.JobServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.create_limit = RateLimiter("CreateJob calls", deps.settings.rate_create_jobs_per_minute)

    async def GetJob(  # noqa: N802 - gRPC method name
        self, request: job_pb2.GetJobRequest, ctx: context.Ctx
    ) -> job_pb2.Job:
        return await jobs.get(self.deps, context.current().workspace.id, request.job_id)

    async def ListJobs(  # noqa: N802
        self, request: job_pb2.ListJobsRequest, ctx: context.Ctx
    ) -> job_pb2.ListJobsResponse:
        return await jobs.list_page(self.deps, context.current().workspace.id, request)

    async def CreateJob(  # noqa: N802
        self, request: job_pb2.CreateJobRequest, ctx: context.Ctx
    ) -> job_pb2.Job:
        call = context.current()
        self.create_limit.check(call.workspace.id)
        return await jobs.create_refresh(self.deps, call, request)
