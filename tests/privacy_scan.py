"""What the database holds, as text, for the privacy tests: every value of every table, and the
plaintext of every sealed value (opened with the vault and its row's associated data), so a test
can say that a person's data is gone from the rows and not only hidden in them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from paylink.v1 import data_pb2

from service import db, pii, sealed
from service.drivers import sandbox_data
from service.vault import Vault, VaultError


def text_of(value: object) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        return raw.decode("latin-1") + "\n" + raw.decode("utf-8", errors="ignore")
    return str(value)


async def dump(pool: db.Pool) -> list[tuple[str, str]]:
    """(table.column, value as text) for every non-null value of every table except uuids and
    times (ids hold no personal data, and their hex digits would match digit needles)."""
    out: list[tuple[str, str]] = []
    tables = await pool.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        " AND table_type = 'BASE TABLE'"
    )
    for table in tables:
        name = table["table_name"]
        for row in await pool.fetch(f'SELECT * FROM "{name}"'):
            for column, value in row.items():
                if value is None or isinstance(value, uuid.UUID) or hasattr(value, "isoformat"):
                    continue
                out.append((f"{name}.{column}", text_of(value)))
    return out


async def opened(
    pool: db.Pool, vault: Vault, only: set[uuid.UUID] | None = None, workspace: uuid.UUID | None = None
) -> list[tuple[str, str]]:
    """(table.column, plaintext) of every sealed value paylink stores, opened; with `only`, just
    those of rows whose key (account, token, session or job id) is in it, and with `workspace`
    just that workspace's idempotency records."""
    out: list[tuple[str, str]] = []

    def wanted(key: uuid.UUID) -> bool:
        return only is None or key in only

    for col in sealed.COLUMNS:
        table, key, column = col.table, col.key, col.column
        for row in await pool.fetch(
            f"SELECT {key} AS k, {column} AS blob FROM {table} WHERE {column} IS NOT NULL"
        ):
            if wanted(row["k"]):
                out.append(
                    (f"{table}.{column}", text_of(vault.open(bytes(row["blob"]), aad=col.aad(row["k"]))))
                )
    for row in await pool.fetch("SELECT account_id, name, data FROM job_results WHERE data IS NOT NULL"):
        if wanted(row["account_id"]):
            body = pii.open_data(vault, pii.result_kind(row["name"]), row["account_id"], bytes(row["data"]))
            out.append(("job_results.data", text_of(body)))
    for row in await pool.fetch("SELECT account_id, external_id, data FROM paystubs"):
        if wanted(row["account_id"]):
            body = pii.open_data(
                vault, pii.Kind.PAYSTUB, row["account_id"], bytes(row["data"]), row["external_id"]
            )
            out.append(("paystubs.data", text_of(body)))
    for row in await pool.fetch(
        "SELECT workspace_id, method, request_id, response FROM idempotency_keys WHERE length(response) > 0"
        " AND ($1::uuid IS NULL OR workspace_id = $1)",
        workspace,
    ):
        aad = f"idempotency:{row['workspace_id']}:{row['method']}:{row['request_id']}".encode()
        try:
            out.append(("idempotency_keys.response", text_of(vault.open(bytes(row["response"]), aad=aad))))
        except VaultError:
            out.append(("idempotency_keys.response", "<unreadable>"))
    return out


def needles(username: str, account_number: str = "") -> list[str]:
    """The personal data of a sandbox user, as it would appear in clear: name, birth date, SSN
    digits, e-mails, phones, home address, and the full deposit account number given to a switch."""
    person: data_pb2.Identity = sandbox_data.identity(username)
    found = [
        person.full_name,
        person.date_of_birth,
        *person.emails,
        *(p.value for p in person.phone_numbers),
        person.address.line1,
    ]
    if account_number:
        found.append(account_number)
    return found


def ssn_pattern(username: str) -> re.Pattern[str]:
    """The last four SSN digits, not glued to other letters, digits or dashes (so not inside an id)."""
    digits = sandbox_data.identity(username).last_four_ssn
    return re.compile(rf"(?<![0-9A-Za-z-]){digits}(?![0-9A-Za-z-])")


def hits(values: Iterable[tuple[str, str]], username: str, account_number: str = "") -> list[str]:
    """Where any of the user's personal data appears in `values`."""
    found = []
    words = needles(username, account_number)
    ssn = ssn_pattern(username)
    for where, text in values:
        found += [f"{where}: {w!r}" for w in words if w in text]
        if ssn.search(text):
            found.append(f"{where}: SSN digits")
    return found
