"""Credential vault: AES-256-GCM with a key ring, so keys rotate without downtime.

Blob layout: version (1 byte, = 1) | key id length (1 byte) | key id (ASCII) | nonce (12 bytes) |
ciphertext + GCM tag. New blobs always use the primary key; old blobs open with whichever key of the
ring they name until they are resealed. The AAD binds a blob to its row and purpose (e.g.
b"account-grant:" + account_id), so a blob copied elsewhere does not open. No message or repr here
ever contains key material or plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

BLOB_VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
# HKDF `info` of the keys that `Vault.digest` uses: a key of the ring is never used for two purposes.
_DIGEST_INFO = b"paylink content digest v1"


class VaultError(Exception):
    """A blob cannot be opened (unknown key, tampered, wrong AAD, malformed)."""


class KeyRing:
    """Named 256-bit keys and the id of the primary one (used for every new blob)."""

    def __init__(self, keys: Mapping[str, bytes], primary: str) -> None:
        if not keys:
            raise ValueError("key ring is empty")
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
                raise ValueError("key id must match [A-Za-z0-9_-]{1,32}")
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} must be {KEY_BYTES} bytes")
        if primary not in keys:
            shown = repr(primary) if _KEY_ID.fullmatch(primary) else "(invalid id)"
            raise ValueError(f"primary key id {shown} is not in the key ring")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._digest_keys = {key_id: _derive(key, _DIGEST_INFO) for key_id, key in keys.items()}
        self._primary = primary

    @classmethod
    def parse(cls, spec: str, primary: str | None = None) -> KeyRing:
        """Parses `"k1:<base64 32 bytes>,k2:<base64>"`; the primary defaults (None or "") to the last key."""
        keys: dict[str, bytes] = {}
        for position, entry in enumerate((e.strip() for e in spec.split(",")), start=1):
            if not entry:
                continue
            key_id, sep, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not sep or not _KEY_ID.fullmatch(key_id):
                raise ValueError(
                    f"key entry {position}: expected '<id>:<base64 key>', id matching [A-Za-z0-9_-]{{1,32}}"
                )
            if key_id in keys:
                raise ValueError(f"key id {key_id!r} is listed twice")
            try:
                keys[key_id] = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"key {key_id!r} is not valid base64") from None
        if not keys:
            raise ValueError("key ring spec lists no keys")
        return cls(keys, primary or list(keys)[-1])

    @property
    def primary(self) -> str:
        """Id of the key new blobs are sealed with."""
        return self._primary

    @property
    def key_ids(self) -> list[str]:
        """Ids of every key in the ring."""
        return list(self._ciphers)

    def cipher(self, key_id: str) -> AESGCM | None:
        """The cipher for a key id, or None when the ring lacks it."""
        return self._ciphers.get(key_id)

    def digest_key(self, key_id: str) -> bytes | None:
        """The HMAC key derived from a key of the ring (never the key itself), or None."""
        return self._digest_keys.get(key_id)

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={self.key_ids!r}, primary={self._primary!r})"


def _derive(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def generate_key() -> str:
    """A new random 256-bit key, base64-encoded for a key ring spec."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


class Vault:
    """Seals and opens secrets with a key ring."""

    def __init__(self, keyring: KeyRing) -> None:
        self._keyring = keyring

    @property
    def keyring(self) -> KeyRing:
        return self._keyring

    def seal(self, plaintext: bytes, *, aad: bytes) -> bytes:
        """Encrypts with the primary key and a fresh random nonce."""
        key_id = self._keyring.primary
        cipher = self._keyring.cipher(key_id)
        if cipher is None:  # KeyRing guarantees the primary exists
            raise VaultError("primary key missing from the key ring")
        nonce = os.urandom(NONCE_BYTES)
        header = bytes([BLOB_VERSION, len(key_id)]) + key_id.encode("ascii")
        return header + nonce + cipher.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, *, aad: bytes) -> bytes:
        """Decrypts a blob sealed under any key of the ring; VaultError otherwise."""
        key_id, nonce, ciphertext = _split(blob)
        cipher = self._keyring.cipher(key_id)
        if cipher is None:
            raise VaultError(f"blob is sealed with key {key_id!r}, which is not in the key ring")
        try:
            return cipher.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise VaultError("blob failed authentication (tampered, wrong key or wrong aad)") from None

    def key_id_of(self, blob: bytes) -> str:
        """The id of the key a blob was sealed with; VaultError when malformed."""
        return _split(blob)[0]

    def needs_reencrypt(self, blob: bytes) -> bool:
        """True when the blob is not sealed with the primary key."""
        return self.key_id_of(blob) != self._keyring.primary

    def reseal(self, blob: bytes, *, aad: bytes) -> bytes:
        """Opens a blob and seals it again with the primary key."""
        return self.seal(self.open(blob, aad=aad), aad=aad)

    def digest(self, parts: Sequence[bytes], *, key_id: str | None = None) -> bytes:
        """A keyed digest (HMAC-SHA256 with a key derived from a ring key, the primary by default) of
        `parts`, for change detection without a plain hash of the plaintext: without the vault keys
        nobody can test a guess against it. Layout: key id length | key id | 32-byte MAC, so a
        digest names the key it was made with (and two keys never give equal digests)."""
        key_id = key_id or self._keyring.primary
        key = self._keyring.digest_key(key_id)
        if key is None:
            raise VaultError(f"key {key_id!r} is not in the key ring")
        mac = hmac.new(key, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return bytes([len(key_id)]) + key_id.encode("ascii") + mac.digest()

    def digests(self, parts: Sequence[bytes]) -> list[bytes]:
        """`digest` under every key of the ring, the primary first: a stored digest made with an
        older key still compares equal while a rotation is under way."""
        ring = self._keyring
        return [
            self.digest(parts, key_id=k)
            for k in [ring.primary, *(k for k in ring.key_ids if k != ring.primary)]
        ]


def _split(blob: bytes) -> tuple[str, bytes, bytes]:
    """(key id, nonce, ciphertext+tag) of a blob; VaultError when malformed."""
    if len(blob) < 2 or blob[0] != BLOB_VERSION:
        raise VaultError("malformed blob: unknown version")
    id_end = 2 + blob[1]
    if blob[1] == 0 or len(blob) < id_end + NONCE_BYTES + TAG_BYTES:
        raise VaultError("malformed blob: truncated")
    try:
        key_id = blob[2:id_end].decode("ascii")
    except UnicodeDecodeError:
        raise VaultError("malformed blob: bad key id") from None
    if not _KEY_ID.fullmatch(key_id):
        raise VaultError("malformed blob: bad key id")
    return key_id, blob[id_end : id_end + NONCE_BYTES], blob[id_end + NONCE_BYTES :]
