"""What the database holds, as text, for the privacy tests: every value of every table, and the
plaintext of every sealed value (opened with the vault and its row's associated data), so a test
can say that a person's data is gone from the rows and not only hidden in them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from google.protobuf.message import Message
from paylink.v1 import common_pb2, data_pb2, document_pb2, shift_pb2, tax_form_pb2

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
    for table, kind in (
        ("paystubs", pii.Kind.PAYSTUB),
        ("shifts", pii.Kind.SHIFT),
        ("tax_forms", pii.Kind.TAX_FORM),
    ):
        for row in await pool.fetch(f"SELECT account_id, external_id, data FROM {table}"):
            if wanted(row["account_id"]):
                body = pii.open_data(vault, kind, row["account_id"], bytes(row["data"]), row["external_id"])
                out.append((f"{table}.data", text_of(body)))
    documents: dict[uuid.UUID, list[bytes]] = {}
    for row in await pool.fetch(
        "SELECT d.account_id, c.document_id, c.part, c.sealed, c.content FROM document_contents c"
        " JOIN documents d ON d.id = c.document_id ORDER BY c.document_id, c.part"
    ):
        if wanted(row["account_id"]):
            stored, item = bytes(row["content"]), f"{row['document_id']}:{row['part']}"
            body = (
                pii.open_data(vault, pii.Kind.DOCUMENT, row["account_id"], stored, item)
                if row["sealed"]
                else stored
            )
            documents.setdefault(row["document_id"], []).append(body)
    out += [("document_contents.content", text_of(b"".join(parts))) for parts in documents.values()]
    for row in await pool.fetch(
        "SELECT workspace_id, method, request_id, response FROM idempotency_keys WHERE length(response) > 0"
        " AND ($1::uuid IS NULL OR workspace_id = $1)",
        workspace,
    ):
        aad = sealed.idempotency_aad(row["workspace_id"], row["method"], row["request_id"])
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


# Messages that are personal data (or hold pay figures): none of them may appear in an event.
PERSONAL_MESSAGES = {
    m.DESCRIPTOR.full_name
    for m in (
        common_pb2.Money,
        data_pb2.Address,
        data_pb2.Identity,
        data_pb2.Employment,
        data_pb2.Income,
        data_pb2.DirectDepositAllocations,
        shift_pb2.Shift,
        tax_form_pb2.TaxForm,
        document_pb2.DocumentChunk,
    )
}


def personal_messages(message: Message, path: str = "") -> list[str]:
    """Paths of every set field, at any depth, whose message type is personal data."""
    found = []
    for field, value in message.ListFields():
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        repeated = bool(field.is_repeated)
        items = value if repeated else [value]
        for n, item in enumerate(items):
            where = f"{path}.{field.name}" + (f"[{n}]" if repeated else "")
            if field.message_type.full_name in PERSONAL_MESSAGES:
                found.append(where)
            else:
                found += personal_messages(item, where)
    return found
