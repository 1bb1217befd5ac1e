"""Domain errors: what went wrong, in the domain's words, with no transport attached.

Domain modules raise these; the gRPC interceptor maps them to a status with `google.rpc` details
(`service/api/status.py`) and the CLI to a message and an exit code. Messages never contain
secrets.
"""

from __future__ import annotations

from collections.abc import Iterable


class DomainError(Exception):
    """A request the domain refuses; `message` is safe to show to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """One or more fields of the request are invalid (each with a description)."""

    def __init__(self, violations: Iterable[tuple[str, str]]) -> None:
        self.violations = list(violations)
        summary = "; ".join(f"{f}: {d}" for f, d in self.violations)
        super().__init__(f"invalid request: {summary}")


class NotFound(DomainError):
    def __init__(self, resource: str, resource_id: str) -> None:
        # The id is the caller's input: echo a bounded prefix, or a huge id would push the status past
        # grpc's 16 KiB metadata limit and the caller would get RESOURCE_EXHAUSTED instead.
        if len(resource_id) > 100:
            resource_id = resource_id[:100] + "..."
        self.resource = resource
        self.resource_id = resource_id
        super().__init__(f"{resource} {resource_id} not found")


class _Reasoned(DomainError):
    """An error with a machine-readable reason (ErrorInfo.reason on the wire)."""

    def __init__(self, reason: str, message: str, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = dict(metadata or {})


class FailedPrecondition(_Reasoned):
    """The request is valid, but the resource is not in a state that allows it."""


class AlreadyExists(_Reasoned):
    pass


class Unauthenticated(_Reasoned):
    pass


class PermissionDenied(_Reasoned):
    pass


class Unavailable(_Reasoned):
    """A dependency is away; the caller may retry."""


class ResourceExhausted(_Reasoned):
    def __init__(self, reason: str, message: str, retry_after_seconds: int) -> None:
        super().__init__(reason, message)
        self.retry_after_seconds = retry_after_seconds


class Violations:
    """Collects every invalid field of a request, then raises one InvalidArgument."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        self.items.append((field, description))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


def invalid_argument(violations: Iterable[tuple[str, str]]) -> InvalidArgument:
    return InvalidArgument(violations)


def invalid_field(field: str, description: str) -> InvalidArgument:
    return InvalidArgument([(field, description)])


def not_found(resource: str, resource_id: str) -> NotFound:
    return NotFound(resource, resource_id)


def failed_precondition(reason: str, message: str, **metadata: str) -> FailedPrecondition:
    return FailedPrecondition(reason, message, metadata)


def already_exists(reason: str, message: str) -> AlreadyExists:
    return AlreadyExists(reason, message)


def unauthenticated(message: str) -> Unauthenticated:
    return Unauthenticated("API_SECRET_INVALID", message)


def permission_denied(reason: str, message: str) -> PermissionDenied:
    return PermissionDenied(reason, message)


def resource_exhausted(reason: str, message: str, retry_after_seconds: int) -> ResourceExhausted:
    return ResourceExhausted(reason, message, retry_after_seconds)


def unavailable(message: str) -> Unavailable:
    return Unavailable("DEPENDENCY_UNAVAILABLE", message)


RELEASE_REFUSED = (
    "this server's release is refused by the database's release guard (a newer release has migrated"
    " the database): retry, another server will serve the call"
)


def release_refused() -> Unavailable:
    """The database's release guard refused this process's write (service/release_guard.py)."""
    return Unavailable("RELEASE_REFUSED", RELEASE_REFUSED)
