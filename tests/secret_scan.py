"""What the secrets scans look for, and where: every API secret this test process handed to a
client, plus fixed needles (passwords, MFA answers, full account numbers), each in clear, base64
(standard and URL-safe, at any byte offset) and hex; and the log output of every process the tests
started (tests/cli/util.py and tests/faults/cluster.py register it)."""

from __future__ import annotations

import base64
import pathlib
import re

# API secrets of this run (tests/harness.py Client registers each one it is given).
API_SECRETS: set[str] = set()
# Log output of subprocesses: files (server stderr, fault-test process logs) or captured text.
PROCESS_LOG_FILES: list[pathlib.Path] = []
PROCESS_LOG_TEXTS: list[tuple[str, str]] = []

_ANY_API_SECRET = re.compile(r"pl_[0-9a-f]{16}_(?!\[REDACTED\])[A-Za-z0-9_\-]{6,}")


def encoded_forms(needle: str) -> list[str]:
    """`needle` as it could appear in a log: in clear, base64 at every byte offset, hex."""
    raw = needle.encode()
    forms = {needle, raw.hex(), raw.hex().upper()}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        start = (offset * 4 + 2) // 3  # characters that depend on the bytes before the needle
        end = (offset + len(raw)) // 3 * 4  # and after it
        core = encoded[start:end]
        if len(core) >= 8:
            forms.add(core)
            forms.add(core.replace("+", "-").replace("/", "_"))
    return sorted(forms)


def secret_forms() -> dict[str, str]:
    """form -> what it reveals, for every API secret of the run (the part after the public key id)."""
    out: dict[str, str] = {}
    for secret in API_SECRETS:
        rest = secret.split("_", 2)[2]
        for form in encoded_forms(rest):
            out[form] = f"API secret pl_{secret.split('_')[1]}_…"
    return out


class Scanner:
    """Finds any of `needles` (form -> what it reveals) and any unredacted API secret, in one pass."""

    def __init__(self, needles: dict[str, str]) -> None:
        self.needles = needles
        ordered = sorted(needles, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def scan(self, where: str, text: str) -> list[str]:
        hits: list[str] = []
        if self._pattern is not None:
            hits += [
                f"{where}: {self.needles[m.group(0)]} ({m.group(0)[:12]}…)"
                for m in self._pattern.finditer(text)
            ]
        hits += [f"{where}: API secret {m.group(0)[:22]}…" for m in _ANY_API_SECRET.finditer(text)]
        return hits


def process_logs() -> list[tuple[str, str]]:
    """(name, text) of every registered subprocess log."""
    out = list(PROCESS_LOG_TEXTS)
    for path in PROCESS_LOG_FILES:
        if path.exists():
            out.append((str(path), path.read_text(errors="replace")))
    return out
