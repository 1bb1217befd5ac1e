"""Requests that are not readable messages answer INVALID_ARGUMENT, not UNKNOWN; so do strings
holding NUL characters, named by their real field, and malformed resource ids.

grpc calls a method's request deserializer before any handler code runs; protobuf raises
DecodeError on a truncated message or a string field that is not UTF-8, and grpc then answers
`UNKNOWN: Unexpected <class 'DecodeError'>` and logs a traceback at ERROR. Every method's
deserializer is therefore swapped (once, when the server is assembled: service/api/interceptor.py)
for `safe(...)`, which returns a `Refused` marker instead of raising; the call pipeline answers the
marker with INVALID_ARGUMENT before authentication or any other work. Nothing is logged above
DEBUG: a caller's bad bytes are not a server error.

A NUL character is valid UTF-8 and protobuf accepts it, but PostgreSQL text cannot hold it: every
string of a readable request (nested messages, repeated fields and maps included) is checked, and
each one holding NUL is reported by its path (`org_name`, `tags[team]`,
`allocation.targets[0].name`). A NUL is encoded as a 0 byte, so a request whose bytes hold none is
not walked. Resource ids follow one rule, checked here for every request too (service/validation.py:
not a UUID, or required and empty -> INVALID_ARGUMENT).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError, Message

from service import errors, validation

Deserializer = Callable[[bytes], Any]


class Refused:
    """What a request deserializer returns for a request answered INVALID_ARGUMENT unread: bytes
    that are not a message of its type, strings holding NUL, malformed ids."""

    __slots__ = ("error", "unreadable")

    def __init__(self, error: errors.InvalidArgument, *, unreadable: bool = False) -> None:
        self.error = error
        self.unreadable = unreadable


def safe(deserializer: Deserializer | None, type_name: str) -> Deserializer | None:
    if deserializer is None:
        return None
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    # The type's id fields, found once here (None: a deserializer of unknown type, looked up per call).
    names = validation.checked_ids(descriptor) if descriptor is not None else None

    def read(raw: bytes) -> Any:
        try:
            message = deserializer(raw)
        except (DecodeError, UnicodeDecodeError, ValueError):
            reason = (
                f"is not a readable {type_name} message (truncated, malformed, or a string that is not UTF-8)"
            )
            return Refused(errors.invalid_field("request", reason), unreadable=True)
        if b"\0" not in raw:  # no NUL string: only the ids to check (the common case, kept short)
            bad_ids = validation.id_violations(message, names) if names != () else None
            return Refused(errors.invalid_argument(bad_ids)) if bad_ids else message
        violations = refusals(message)
        return Refused(errors.invalid_argument(violations)) if violations else message

    return read


def refusals(message: Any, *, nul: bool = True) -> list[tuple[str, str]]:
    """The request's NUL strings (looked for only when `nul`) and malformed ids, as violations."""
    if not isinstance(message, Message):
        return []
    violations = [(f, "must not contain NUL characters") for f in nul_fields(message)] if nul else []
    violations += [v for v in validation.id_violations(message) if v[0] not in dict(violations)]
    return violations


def nul_fields(message: Message, prefix: str = "") -> list[str]:
    """Paths of the string fields (at any depth) that hold a NUL character."""
    found: list[str] = []
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                where = f"{path}[{str(key).replace(chr(0), '')[:64]}]"
                if isinstance(key, str) and "\0" in key:
                    found.append(where)
                if value_field.message_type is not None:
                    found += nul_fields(item, f"{where}.")
                elif isinstance(item, str) and "\0" in item:
                    found.append(where)
        elif field.is_repeated:
            for i, item in enumerate(value):
                if isinstance(item, Message):
                    found += nul_fields(item, f"{path}[{i}].")
                elif isinstance(item, str) and "\0" in item:
                    found.append(f"{path}[{i}]")
        elif isinstance(value, Message):
            found += nul_fields(value, f"{path}.")
        elif isinstance(value, str) and "\0" in value:
            found.append(path)
    return sorted(set(found), key=found.index)


def type_name(deserializer: Deserializer | None) -> str:
    owner = getattr(deserializer, "__self__", None)  # Message.FromString is a bound classmethod
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request"))
