"""Errors on the wire: gRPC status codes with `google.rpc` details (AIP-193).

`from_domain` is the one mapping from a domain error (service/errors.py) to its status: a
`BadRequest` with one violation per invalid field, a `ResourceInfo` for NOT_FOUND, or an
`ErrorInfo` (domain `paylink`, a reason) — plus `RetryInfo` when the caller should wait.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from service import errors

DOMAIN = "paylink"


class ApiError(Exception):
    """An error answered to the caller, as a gRPC code, a message and details."""

    def __init__(self, code: grpc.StatusCode, message: str, details: Iterable[Message] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)

    def to_status(self) -> status_pb2.Status:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        for detail in self.details:
            packed = any_pb2.Any()
            packed.Pack(detail)
            status.details.append(packed)
        return status


def _info(exc: errors._Reasoned) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN, metadata=exc.metadata)


_CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def from_domain(exc: errors.DomainError) -> ApiError:
    """The status a domain error is answered with."""
    if isinstance(exc, errors.InvalidArgument):
        request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in exc.violations
            ]
        )
        return ApiError(grpc.StatusCode.INVALID_ARGUMENT, exc.message, [request])
    if isinstance(exc, errors.NotFound):
        info = error_details_pb2.ResourceInfo(resource_type=exc.resource, resource_name=exc.resource_id)
        return ApiError(grpc.StatusCode.NOT_FOUND, exc.message, [info])
    if isinstance(exc, errors.ResourceExhausted):
        retry = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=exc.retry_after_seconds)
        )
        return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.message, [_info(exc), retry])
    if isinstance(exc, errors._Reasoned):
        return ApiError(_CODES[type(exc)], exc.message, [_info(exc)])
    return ApiError(grpc.StatusCode.INTERNAL, exc.message)


assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == code_pb2.INVALID_ARGUMENT
