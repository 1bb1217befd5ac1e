"""Redaction of secrets from text that leaves the process as logs.

An API secret is `pl_<key id>_<random>`, a link token `lt_<random>`, a vault key `<id>:<base64 of 32
bytes>`. `redact` replaces each of them, whole or cut short, also when written as bytes
(`b'pl_…\\xc3'`), percent-encoded, base64 (standard or URL-safe, at any offset) or hex. The public
key id of an API secret is kept: it says which secret was involved without revealing it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import urllib.parse

REDACTED = "[REDACTED]"

# pl_ plus the 16 hex characters of the key id (kept when whole), then anything secret-like.
_API_SECRET = re.compile(r"pl_([0-9a-f]{16})_[A-Za-z0-9_\-]*|pl_[0-9a-f]{4,}[A-Za-z0-9_\-]*", re.IGNORECASE)
_LINK_TOKEN = re.compile(r"lt_[A-Za-z0-9_\-]{6,}")
_VAULT_KEY = re.compile(r"\b([A-Za-z0-9._\-]{1,64}):[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=")
# Runs that may be an encoding of one of the above.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_\-]{12,}={0,2}")
_HEX_RUN = re.compile(r"[0-9a-fA-F]{16,}")
_PERCENT = re.compile(r"%[0-9a-fA-F]{2}")
_DECODED_SECRET = re.compile(rb"pl_[0-9a-f]{4,}|lt_[A-Za-z0-9_\-]{6,}", re.IGNORECASE)


def _secret(match: re.Match[str]) -> str:
    key_id = match.group(1)
    return f"pl_{key_id}_{REDACTED}" if key_id else f"pl_{REDACTED}"


def _decodings(run: str) -> list[bytes]:
    """What a base64 or hex run decodes to, at every alignment."""
    out: list[bytes] = []
    if _HEX_RUN.fullmatch(run):
        for start in (0, 1):
            piece = run[start:]
            with contextlib.suppress(binascii.Error):
                out.append(binascii.unhexlify(piece[: len(piece) // 2 * 2]))
    body = run.rstrip("=").replace("-", "+").replace("_", "/")
    for start in range(4):
        piece = body[start:]
        piece = piece[: len(piece) // 4 * 4]
        if len(piece) >= 8:
            with contextlib.suppress(binascii.Error, ValueError):
                out.append(base64.b64decode(piece, validate=True))
    return out


def _encoded(match: re.Match[str]) -> str:
    run = match.group(0)
    if any(_DECODED_SECRET.search(decoded) for decoded in _decodings(run)):
        return REDACTED
    return run


def redact(text: str) -> str:
    """`text` with every secret-looking value replaced by [REDACTED]."""
    if "%" in text and _PERCENT.search(text):
        unquoted = urllib.parse.unquote(text)
        if unquoted != text and redact(unquoted) != unquoted:
            text = unquoted
    text = _API_SECRET.sub(_secret, text)
    text = _LINK_TOKEN.sub(REDACTED, text)
    text = _VAULT_KEY.sub(lambda m: f"{m.group(1)}:{REDACTED}", text)
    return _BASE64_RUN.sub(_encoded, text)
