"""Identifiers and secret hashing."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid

# The canonical text form only: uuid.UUID() also takes braces, "urn:uuid:", missing dashes and
# surrounding whitespace, which would make two spellings of one id.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def is_uuid(value: str) -> bool:
    """Whether `value` is a UUID in its canonical text form: what `parse_uuid` accepts, unbuilt."""
    return len(value) == 36 and _UUID.fullmatch(value) is not None


def parse_uuid(value: str) -> uuid.UUID | None:
    """The UUID in `value`, or None when it is not one (callers answer INVALID_ARGUMENT/NOT_FOUND)."""
    if len(value) != 36 or not _UUID.fullmatch(value):
        return None
    return uuid.UUID(value)


def sha256(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def new_link_token() -> str:
    """A link token string: 256 random bits, URL-safe."""
    return "lt_" + secrets.token_urlsafe(32)


def new_api_secret() -> tuple[str, str]:
    """(key_id, secret). The key id is public and indexes the hash; the secret is shown once."""
    key_id = secrets.token_hex(8)
    return key_id, f"pl_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of_secret(secret: str) -> str | None:
    parts = secret.split("_")
    if len(parts) < 3 or parts[0] != "pl" or len(parts[1]) != 16:
        return None
    return parts[1]
