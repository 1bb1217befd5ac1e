"""Personal data sealing rules (service/pii.py) and the vault's keyed digest: no I/O."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paylink.v1 import common_pb2, data_pb2

from service import pii
from service.vault import KeyRing, Vault, VaultError

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
ACCOUNT = uuid.UUID("0b9a4f7e-0000-4000-8000-000000000001")
OTHER = uuid.UUID("0b9a4f7e-0000-4000-8000-000000000002")
IDENTITY = data_pb2.Identity(
    full_name="Andre Thomas", date_of_birth="1982-01-27", last_four_ssn="6143", emails=["a@example.com"]
)


@pytest.fixture
def vault() -> Vault:
    return Vault(KeyRing({"k1": K1}, "k1"))


def test_sealed_blob_hides_the_plaintext_and_opens_only_for_its_account_kind_and_item(vault: Vault) -> None:
    body = IDENTITY.SerializeToString(deterministic=True)
    blob = pii.seal(vault, pii.Kind.IDENTITY, ACCOUNT, body)
    assert b"Andre" not in blob and b"1982" not in blob and b"6143" not in blob
    assert pii.is_sealed(blob)
    assert pii.open_data(vault, pii.Kind.IDENTITY, ACCOUNT, blob) == body
    with pytest.raises(VaultError):
        pii.open_data(vault, pii.Kind.IDENTITY, OTHER, blob)  # copied to another account
    with pytest.raises(VaultError):
        pii.open_data(vault, pii.Kind.EMPLOYMENT, ACCOUNT, blob)  # or read as another kind
    stub = pii.seal(vault, pii.Kind.PAYSTUB, ACCOUNT, b"\x1a\x0a2026-11-13", "stub-1")
    assert pii.open_data(vault, pii.Kind.PAYSTUB, ACCOUNT, stub, "stub-1") == b"\x1a\x0a2026-11-13"
    with pytest.raises(VaultError):
        pii.open_data(vault, pii.Kind.PAYSTUB, ACCOUNT, stub, "stub-2")  # or as another paystub


def test_aad_names_kind_account_and_item() -> None:
    assert pii.aad(pii.Kind.IDENTITY, ACCOUNT) == b"pii:identity:" + str(ACCOUNT).encode()
    assert pii.aad(pii.Kind.PAYSTUB, ACCOUNT, "x") == b"pii:paystub:" + str(ACCOUNT).encode() + b":x"
    assert pii.result_kind(common_pb2.JOB_NAME_INCOME) == "income"
    assert pii.result_kind(99) == "job-99"


def test_rows_written_before_sealing_still_read(vault: Vault) -> None:
    body = IDENTITY.SerializeToString(deterministic=True)
    assert not pii.is_sealed(body)
    assert pii.open_data(vault, pii.Kind.IDENTITY, ACCOUNT, body) == body
    assert not pii.is_sealed(b"")


_strings = st.text(max_size=20)


@given(
    name=_strings,
    dob=_strings,
    emails=st.lists(_strings, max_size=3),
    account=_strings,
    cents=st.integers(min_value=-(2**62), max_value=2**62),
    pay_date=_strings,
)
def test_a_serialized_data_message_never_looks_sealed(
    name: str, dob: str, emails: list[str], account: str, cents: int, pay_date: str
) -> None:
    """The legacy/sealed test relies on it: a protobuf field key byte is at least 0x08."""
    messages = [
        data_pb2.Identity(account_id=account, full_name=name, date_of_birth=dob, emails=emails),
        data_pb2.Income(account_id=account, compensation_amount_cents=cents),
        data_pb2.Employment(title=name, start_date=dob),
        data_pb2.Paystub(pay_date=pay_date, gross_pay=common_pb2.Money(amount_cents=cents)),
        data_pb2.DirectDepositAllocations(account_id=account),
    ]
    for message in messages:
        assert not pii.is_sealed(message.SerializeToString(deterministic=True))


def test_digest_is_keyed_stable_and_names_its_key() -> None:
    one = Vault(KeyRing({"k1": K1}, "k1"))
    parts = [b"identity bytes"]
    assert one.digest(parts) == one.digest(parts)
    assert one.digest(parts) != one.digest([b"identity bytez"])
    assert one.digest([b"ab", b"c"]) != one.digest([b"a", b"bc"])  # parts are length-prefixed
    # Without the key nobody can test a guess: another key gives another digest.
    other = Vault(KeyRing({"k1": K2}, "k1"))
    assert other.digest(parts) != one.digest(parts)
    assert one.digest(parts)[:3] == b"\x02k1" and len(one.digest(parts)) == 3 + 32


def test_digests_cover_every_key_during_a_rotation() -> None:
    old = Vault(KeyRing({"k1": K1}, "k1"))
    rotated = Vault(KeyRing({"k1": K1, "k2": K2}, "k2"))
    parts = [b"paystub set"]
    both = rotated.digests(parts)
    assert both[0] == rotated.digest(parts) and both[0][:3] == b"\x02k2"
    assert old.digest(parts) in both  # a row stored before the rotation still compares equal
    with pytest.raises(VaultError):
        old.digest(parts, key_id="k9")


def test_set_parts_ignore_the_order_listed() -> None:
    a, b = ("e1", b"one"), ("e2", b"two")
    assert pii.set_parts([a, b]) == pii.set_parts([b, a])
    assert pii.set_parts([a]) != pii.set_parts([("e1", b"uno")])


def test_resealed_says_what_a_stored_value_becomes() -> None:
    """Plain (stored before sealing) and old-key values are sealed under the primary key; a value
    already sealed under it is left alone (None), so a second `vault reencrypt` changes nothing."""
    old = Vault(KeyRing({"k1": K1}, "k1"))
    rotated = Vault(KeyRing({"k1": K1, "k2": K2}, "k2"))
    body = IDENTITY.SerializeToString(deterministic=True)
    for stored in (body, pii.seal(old, pii.Kind.SHIFT, ACCOUNT, body, "s-1")):
        opened, new = pii.resealed(rotated, pii.Kind.SHIFT, ACCOUNT, stored, "s-1")
        assert opened == body and new is not None and rotated.key_id_of(new) == "k2"
        assert pii.resealed(rotated, pii.Kind.SHIFT, ACCOUNT, new, "s-1") == (body, None)
    with pytest.raises(VaultError):  # a value of another item is not quietly re-bound to this one
        pii.resealed(
            rotated, pii.Kind.SHIFT, ACCOUNT, pii.seal(old, pii.Kind.SHIFT, ACCOUNT, body, "s-2"), "s-1"
        )


def test_set_parts_cover_ids_and_contents_in_any_order() -> None:
    a, b = ("x-1", b"one"), ("x-2", b"two")
    assert pii.set_parts([a, b]) == pii.set_parts([b, a])
    assert pii.set_parts([a, b]) != pii.set_parts([("x-1", b"two"), ("x-2", b"one")])
