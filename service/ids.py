"""Identifiers and secret hashing."""

from __future__ import annotations

import hashlib
import secrets
import uuid


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def parse_uuid(value: str) -> uuid.UUID | None:
    """The UUID in `value`, or None when it is not one (callers answer INVALID_ARGUMENT/NOT_FOUND)."""
    if len(value) != 36:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


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
