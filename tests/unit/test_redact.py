"""service.redact: API secrets, link tokens and vault keys leave no trace in a log line, in any of
the forms a log can hold them; ordinary ids and text are left alone."""

from __future__ import annotations

import base64
import logging
import urllib.parse

import pytest

from service import logs
from service.redact import REDACTED, redact

SECRET = "pl_0123456789abcdef_Zq3x-Kp09_aaBBccDDeeFFggHHiiJJkkLLmmNNoo"
REST = SECRET.split("_", 2)[2]
TOKEN = "lt_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde"
VAULT = "prod1:" + base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(
    "text",
    [
        SECRET,
        f"Invalid encoding on b'{SECRET}\\xc3'",
        f"secret={SECRET[:30]}",  # cut short
        f"x={base64.b64encode(SECRET.encode()).decode()}",
        f"x={base64.urlsafe_b64encode(b'header:' + SECRET.encode()).decode()}",  # not at offset 0
        f"x={base64.b64encode(b'ab' + SECRET.encode()).decode()}",
        f"hex {SECRET.encode().hex()}",
        f"hex {('0' + SECRET.encode().hex())}",
        urllib.parse.quote(f"grpc-message: {SECRET}", safe=""),
        f"token {TOKEN}",
        f"keys {VAULT}",
    ],
)
def test_secret_forms_are_redacted(text: str) -> None:
    out = redact(text)
    assert REDACTED in out
    assert REST not in out and REST[:10] not in out
    assert TOKEN[3:] not in out and VAULT.split(":")[1] not in out
    for encoded in (base64.b64encode(SECRET.encode()).decode(), SECRET.encode().hex()):
        assert encoded[8:20] not in out


def test_the_public_key_id_stays() -> None:
    assert redact(SECRET) == f"pl_0123456789abcdef_{REDACTED}"


@pytest.mark.parametrize(
    "text",
    [
        "job 1b4e28ba-2fa1-11d2-883f-0016d3cca427 finished",
        "request_id=4f1c2d3e4a5b6c7d8e9f0a1b2c3d4e5f",
        "topic paylink.identity.added partition 0 offset 12345678901234",
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "relay is the leader: publishing the outbox",
        "platform sandbox_adp answered in 0.5 s",
    ],
)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert redact(text) == text


def test_every_record_is_redacted_whoever_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    logs.install_redaction()
    with caplog.at_level(logging.INFO):
        logging.getLogger("some.library").info("got %s", SECRET)
        try:
            raise ValueError(f"bad secret {SECRET}")
        except ValueError:
            logging.getLogger("other").exception("failed")
    assert REST not in caplog.text
    assert caplog.records[0].getMessage() == f"got pl_0123456789abcdef_{REDACTED}"


def test_json_lines_redact_extra_fields() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "call", (), None)
    record.request_id = SECRET
    assert REST not in logs.JsonFormatter().format(record)


def test_grpc_invalid_encoding_record_loses_the_value_and_is_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logs.install_redaction()
    with caplog.at_level(logging.DEBUG):
        try:
            (SECRET.encode() + b"\xc3").decode()
        except UnicodeDecodeError:
            logging.getLogger("grpc._cython.cygrpc").exception("Invalid encoding on %s", SECRET.encode())
    (record,) = [r for r in caplog.records if r.name == "grpc._cython.cygrpc"]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "value withheld" in record.getMessage() and "pl_" not in caplog.text
