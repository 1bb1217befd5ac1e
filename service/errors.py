"""API errors with `google.rpc.Status` details (AIP-193).

Handlers raise ApiError; the call pipeline turns it into a gRPC status whose details carry a
`BadRequest` (one violation per invalid field) or an `ErrorInfo` (domain `paylink`, a reason).
Messages never contain secrets.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

DOMAIN = "paylink"


class ApiError(Exception):
    """An error answered to the caller."""

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


def _info(reason: str, metadata: dict[str, str] | None = None) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})


class Violations:
    """Collects every invalid field of a request, then raises one INVALID_ARGUMENT."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        self.items.append((field, description))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise invalid_argument(self.items)


def invalid_argument(violations: Iterable[tuple[str, str]]) -> ApiError:
    items = list(violations)
    request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in items
        ]
    )
    summary = "; ".join(f"{f}: {d}" for f, d in items)
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"invalid request: {summary}", [request])


def invalid_field(field: str, description: str) -> ApiError:
    return invalid_argument([(field, description)])


def not_found(resource: str, resource_id: str) -> ApiError:
    # The id is the caller's input: echo a bounded prefix, or a huge id would push the status past
    # grpc's 16 KiB metadata limit and the caller would get RESOURCE_EXHAUSTED instead.
    if len(resource_id) > 100:
        resource_id = resource_id[:100] + "..."
    info = error_details_pb2.ResourceInfo(resource_type=resource, resource_name=resource_id)
    return ApiError(grpc.StatusCode.NOT_FOUND, f"{resource} {resource_id} not found", [info])


def failed_precondition(reason: str, message: str, **metadata: str) -> ApiError:
    return ApiError(grpc.StatusCode.FAILED_PRECONDITION, message, [_info(reason, metadata)])


def already_exists(reason: str, message: str) -> ApiError:
    return ApiError(grpc.StatusCode.ALREADY_EXISTS, message, [_info(reason)])


def unauthenticated(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.UNAUTHENTICATED, message, [_info("API_SECRET_INVALID")])


def permission_denied(reason: str, message: str) -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, message, [_info(reason)])


def resource_exhausted(reason: str, message: str, retry_after_seconds: int) -> ApiError:
    from google.protobuf import duration_pb2

    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_after_seconds))
    return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, [_info(reason), retry])


def unavailable(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.UNAVAILABLE, message, [_info("DEPENDENCY_UNAVAILABLE")])


assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == code_pb2.INVALID_ARGUMENT
