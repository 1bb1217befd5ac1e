"""Credential vault: AES-256-GCM blobs, key ring parsing and rotation."""

from __future__ import annotations

import base64

import pytest

from service.vault import KeyRing, Vault, VaultError, generate_key

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
AAD = b"account-grant:0b9a4f7e-0000-4000-8000-000000000001"
SECRET = b'{"username": "user_good", "password": "pass_good"}'


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


@pytest.fixture
def vault() -> Vault:
    return Vault(KeyRing({"k1": K1}, "k1"))


def test_round_trip(vault: Vault) -> None:
    blob = vault.seal(SECRET, aad=AAD)
    assert vault.open(blob, aad=AAD) == SECRET
    assert blob[:4] == b"\x01\x02k1"
    assert len(blob) == 1 + 1 + 2 + 12 + len(SECRET) + 16
    assert SECRET not in blob and b"pass_good" not in blob
    assert vault.key_id_of(blob) == "k1"
    assert vault.open(vault.seal(b"", aad=b""), aad=b"") == b""


def test_nonce_is_random(vault: Vault) -> None:
    a, b = vault.seal(SECRET, aad=AAD), vault.seal(SECRET, aad=AAD)
    assert a != b and a[4:16] != b[4:16]


@pytest.mark.parametrize("position", [4, 10, 16, 20, -1])
def test_tampered_blob_fails(vault: Vault, position: int) -> None:
    blob = bytearray(vault.seal(SECRET, aad=AAD))
    blob[position] ^= 0x01
    with pytest.raises(VaultError) as info:
        vault.open(bytes(blob), aad=AAD)
    assert "pass_good" not in str(info.value) and "authentication" in str(info.value)


def test_wrong_aad_fails(vault: Vault) -> None:
    blob = vault.seal(SECRET, aad=AAD)
    with pytest.raises(VaultError, match="authentication"):
        vault.open(blob, aad=b"account-grant:another-account")
    with pytest.raises(VaultError):
        vault.open(blob, aad=b"")


def test_unknown_key_id_fails(vault: Vault) -> None:
    other = Vault(KeyRing({"k9": K2}, "k9"))
    blob = other.seal(SECRET, aad=AAD)
    with pytest.raises(VaultError, match="'k9', which is not in the key ring"):
        vault.open(blob, aad=AAD)


def test_same_id_other_key_fails(vault: Vault) -> None:
    blob = Vault(KeyRing({"k1": K2}, "k1")).seal(SECRET, aad=AAD)
    with pytest.raises(VaultError, match="authentication"):
        vault.open(blob, aad=AAD)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x01",
        b"\x02\x02k1" + bytes(40),
        b"\x01\x00" + bytes(40),
        b"\x01\x02k1" + bytes(20),
        b"\x01\x02k!" + bytes(40),
    ],
)
def test_malformed_blob_fails(vault: Vault, blob: bytes) -> None:
    with pytest.raises(VaultError, match="malformed"):
        vault.open(blob, aad=AAD)
    with pytest.raises(VaultError, match="malformed"):
        vault.key_id_of(blob)


def test_rotation() -> None:
    old = Vault(KeyRing({"k1": K1}, "k1"))
    blob = old.seal(SECRET, aad=AAD)
    both = Vault(KeyRing({"k1": K1, "k2": K2}, "k2"))
    assert both.open(blob, aad=AAD) == SECRET
    assert both.needs_reencrypt(blob) is True
    new_blob = both.reseal(blob, aad=AAD)
    assert both.key_id_of(new_blob) == "k2"
    assert both.needs_reencrypt(new_blob) is False
    assert both.open(new_blob, aad=AAD) == SECRET
    assert both.key_id_of(both.seal(b"x", aad=b"a")) == "k2"
    only_k2 = Vault(KeyRing({"k2": K2}, "k2"))
    assert only_k2.open(new_blob, aad=AAD) == SECRET
    with pytest.raises(VaultError, match="not in the key ring"):
        only_k2.open(blob, aad=AAD)
    with pytest.raises(VaultError):
        both.reseal(blob, aad=b"wrong")


def test_parse_spec() -> None:
    ring = KeyRing.parse(f"k1:{b64(K1)}, k2:{b64(K2)}")
    assert ring.primary == "k2" and ring.key_ids == ["k1", "k2"]
    assert KeyRing.parse(f"k1:{b64(K1)},k2:{b64(K2)}", "k1").primary == "k1"
    assert KeyRing.parse(f"k1:{b64(K1)},k2:{b64(K2)}", "").primary == "k2"
    vault = Vault(KeyRing.parse(f"old_key-1:{b64(K1)}"))
    assert vault.key_id_of(vault.seal(b"x", aad=b"")) == "old_key-1"
    sealed = Vault(KeyRing({"k2": K2}, "k2")).seal(SECRET, aad=AAD)
    assert Vault(ring).open(sealed, aad=AAD) == SECRET


def test_generate_key() -> None:
    key = generate_key()
    assert len(base64.b64decode(key, validate=True)) == 32
    assert generate_key() != key
    ring = KeyRing.parse(f"new:{key}")
    assert Vault(ring).open(Vault(ring).seal(b"x", aad=b"a"), aad=b"a") == b"x"


SHORT = b64(bytes(16))
LONG = b64(bytes(range(33)))


@pytest.mark.parametrize(
    ("spec", "primary", "message", "secret_text"),
    [
        (f"k1:{SHORT}", None, "key 'k1' must be 32 bytes", SHORT),
        (f"k1:{LONG}", None, "key 'k1' must be 32 bytes", LONG),
        ("k1:not*base64!!", None, "key 'k1' is not valid base64", "not*base64"),
        (f"k1:{b64(K1)[:-2]}", None, "key 'k1' is not valid base64", b64(K1)[:-2]),
        (f"bad id!:{b64(K1)}", None, "key entry 1: expected '<id>:<base64 key>'", b64(K1)),
        (b64(K1), None, "key entry 1: expected", b64(K1)),
        (f"k1:{b64(K1)},{'x' * 33}:{b64(K2)}", None, "key entry 2", b64(K2)),
        (f"k1:{b64(K1)},k1:{b64(K2)}", None, "key id 'k1' is listed twice", b64(K2)),
        (f"k1:{b64(K1)}", "k2", "primary key id 'k2' is not in the key ring", b64(K1)),
        (f"k1:{b64(K1)}", b64(K2), "primary key id (invalid id)", b64(K2)),
        ("", None, "lists no keys", ""),
        (" , ", None, "lists no keys", ""),
    ],
)
def test_parse_errors_never_echo_keys(spec: str, primary: str | None, message: str, secret_text: str) -> None:
    with pytest.raises(ValueError) as info:
        KeyRing.parse(spec, primary)
    assert message in str(info.value)
    if secret_text:
        assert secret_text not in str(info.value)


def test_keyring_validation() -> None:
    with pytest.raises(ValueError, match="must be 32 bytes"):
        KeyRing({"k1": bytes(31)}, "k1")
    with pytest.raises(ValueError, match=r"key id must match"):
        KeyRing({"k 1": K1}, "k 1")
    with pytest.raises(ValueError, match="empty"):
        KeyRing({}, "k1")
    with pytest.raises(ValueError, match="'k2' is not in the key ring"):
        KeyRing({"k1": K1}, "k2")


def test_repr_hides_keys() -> None:
    ring = KeyRing({"k1": K1, "k2": K2}, "k2")
    text = repr(ring) + repr(Vault(ring).keyring)
    assert text.startswith("KeyRing(key_ids=['k1', 'k2'], primary='k2')")
    assert b64(K1) not in text and repr(K1) not in text and K1.hex() not in text
