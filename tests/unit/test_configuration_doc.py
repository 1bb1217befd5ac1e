"""docs/configuration.md lists every setting of service/config.py, with its real default, and
nothing that is not a setting."""

from __future__ import annotations

import pathlib
import re

from service.config import Settings

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
ROW = re.compile(r"^\| `PAYLINK_([A-Z0-9_]+)` \| ([^|]*) \|", re.M)


def _documented() -> dict[str, str]:
    return {name.lower(): default.strip() for name, default in ROW.findall(DOC.read_text())}


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def test_every_setting_is_documented_and_nothing_else() -> None:
    documented = _documented()
    assert sorted(set(Settings.model_fields) - set(documented)) == [], "add these to docs/configuration.md"
    assert sorted(set(documented) - set(Settings.model_fields)) == [], "not settings any more"


def test_documented_defaults_are_the_real_ones() -> None:
    documented = _documented()
    for name, field in Settings.model_fields.items():
        if name in ("vault_keys", "vault_primary_key"):
            continue  # described in words (a development key; the last key of the ring)
        assert documented[name] == _shown(field.default), name
