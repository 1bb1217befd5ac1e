"""PAYLINK_DATABASE_URL with a primary and its standbys (docs/deployment.md): a DSN naming several
hosts must pick the writable one, or a connection could land on a read-only standby."""

from __future__ import annotations

import pydantic
import pytest

from service.config import Settings

PAIR = "postgresql://paylink:pw@10.0.0.1:5432,10.0.0.2:5432/paylink"


@pytest.mark.parametrize("attrs", ["read-write", "primary"])
def test_multi_host_dsn_that_targets_the_writable_host_is_accepted(attrs: str) -> None:
    url = f"{PAIR}?target_session_attrs={attrs}"
    assert Settings(database_url=url).database_url == url


@pytest.mark.parametrize("query", ["", "?sslmode=disable", "?target_session_attrs=any"])
def test_multi_host_dsn_without_read_write_is_refused(query: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="target_session_attrs=read-write"):
        Settings(database_url=PAIR + query)


def test_single_host_dsn_needs_no_target_session_attrs() -> None:
    url = "postgresql://paylink:pw@127.0.0.1:5432/paylink"
    assert Settings(database_url=url).database_url == url
