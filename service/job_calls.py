"""What platform call a job makes: its name mapped to the driver's method, and the money rules checked
once more right before a switch (allocation_rules.py). The worker calls `call` inside its platform
block (timeout, per-platform limit); the outcome it returns is written by the completer."""

from __future__ import annotations

import json
import logging

from paylink.v1 import common_pb2

from service import allocation_rules, grants, record_jobs, sealed
from service.drivers.base import JobContext, PaystubQuery, PlatformDriver, SwitchRequest, SwitchTarget
from service.job_outcomes import Failure, Outcome, Success
from service.queue import ClaimedJob
from service.vault import Vault

log = logging.getLogger("paylink.worker")


async def call(
    driver: PlatformDriver, vault: Vault, job: ClaimedJob, ctx: JobContext, new_grant: grants.NewGrant | None
) -> Outcome:
    name = job.name
    params = job.job_params()
    if name == common_pb2.JOB_NAME_IDENTITY:
        return Success(await driver.fetch_identity(ctx), new_grant=new_grant)
    if name == common_pb2.JOB_NAME_EMPLOYMENT:
        return Success(await driver.fetch_employment(ctx), new_grant=new_grant)
    if name == common_pb2.JOB_NAME_INCOME:
        return Success(await driver.fetch_income(ctx), new_grant=new_grant)
    if name == common_pb2.JOB_NAME_DIRECT_DEPOSIT_ALLOCATIONS:
        return Success(await driver.fetch_allocations(ctx), new_grant=new_grant)
    if name == common_pb2.JOB_NAME_PAYSTUBS:
        query = PaystubQuery(
            params.paystubs.count, params.paystubs.from_pay_date, params.paystubs.to_pay_date
        )
        return Success(paystubs=await driver.fetch_paystubs(ctx, query), new_grant=new_grant)
    if name == common_pb2.JOB_NAME_DIRECT_DEPOSIT_SWITCH:
        # The money rules once more, right before the platform moves pay (allocation_rules.py).
        switch = params.direct_deposit_switch
        problem = allocation_rules.check_switch(
            switch.action, switch.allocation.type, switch.allocation.value, switch.splitting_disabled
        )
        if problem is not None:
            log.warning(
                "switch refused before the platform", extra={"job_id": str(job.id), "reason": problem}
            )
            return Failure(
                common_pb2.JOB_ERROR_CODE_ALLOCATION_REJECTED, f"refused before the platform: {problem}"
            )
        return Success(
            await driver.switch_direct_deposit(ctx, _switch_request(vault, job, params)),
            new_grant=new_grant,
        )
    if name in record_jobs.RECORD_JOBS:
        return Success(records=await record_jobs.fetch(driver, ctx, name, params), new_grant=new_grant)
    return Failure(common_pb2.JOB_ERROR_CODE_JOB_NOT_SUPPORTED, f"unknown job {name}")


def _switch_request(vault: Vault, job: ClaimedJob, params: common_pb2.JobParams) -> SwitchRequest:
    assert job.params_sealed is not None  # a switch job always has its sealed target
    secret = json.loads(vault.open(job.params_sealed, aad=sealed.JOB_PARAMS.aad(job.id)))
    switch = params.direct_deposit_switch
    return SwitchRequest(
        action=switch.action,
        allocation_type=switch.allocation.type,
        value=switch.allocation.value,
        target=SwitchTarget(
            type=secret["type"],
            routing_number=secret["routing_number"],
            account_number=secret["account_number"],
            name=secret["name"],
        ),
    )
