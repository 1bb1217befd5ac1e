"""The public development vault key (service/config.py) never protects a production workspace
(issue #11, finding 8): a process whose primary key it is refuses to start once a non-sandbox
workspace exists, and any process with the key in its ring warns loudly."""

from __future__ import annotations

import base64
import json
import os
import pathlib

from service import auth, db
from service.config import DEV_VAULT_KEYS, Settings
from tests.cli.util import free_port, run, service_env, serving

OWN_KEY = "own1:" + base64.b64encode(os.urandom(32)).decode()


def _warnings(stderr: str) -> list[str]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line["msg"] for line in lines if line["level"] == "warning"]


async def test_development_key_with_a_production_workspace(
    fresh_database: str, settings: Settings, tmp_path: pathlib.Path
) -> None:
    env = service_env(settings, PAYLINK_DATABASE_URL=fresh_database, PAYLINK_GRPC_PORT=str(free_port()))
    pool = await db.create_pool(settings.model_copy(update={"database_url": fresh_database}))
    try:
        # Only sandbox workspaces: it starts, and says loudly what the key is.
        await auth.create_workspace(pool, "sandbox-only")
        async with serving("api", {**env, "PAYLINK_VAULT_KEYS": DEV_VAULT_KEYS}, tmp_path) as server:
            pass
        assert any("PUBLIC DEVELOPMENT KEY" in w for w in _warnings(server.stderr_path.read_text()))

        # A production workspace: the development key as primary stops every kind of process.
        await auth.create_workspace(pool, "production", sandbox=False)
        for command in ("api", "worker", "serve"):
            refused = await run([command], {**env, "PAYLINK_VAULT_KEYS": DEV_VAULT_KEYS}, within=60)
            assert refused.code != 0, (command, refused.err[-2000:])
            assert "PAYLINK_VAULT_KEYS" in refused.err and "public development key" in refused.err
            assert "paylink serving" not in refused.out
        # Renamed, it is still the same key.
        renamed = DEV_VAULT_KEYS.replace("dev1:", "prod7:")
        refused = await run(["api"], {**env, "PAYLINK_VAULT_KEYS": renamed}, within=60)
        assert refused.code != 0 and "public development key" in refused.err

        # An own primary key starts; the development key kept for old blobs is still warned about.
        ring = f"{DEV_VAULT_KEYS},{OWN_KEY}"
        async with serving("api", {**env, "PAYLINK_VAULT_KEYS": ring}, tmp_path) as server:
            pass
        assert any("PUBLIC DEVELOPMENT KEY" in w for w in _warnings(server.stderr_path.read_text()))
        async with serving("api", {**env, "PAYLINK_VAULT_KEYS": OWN_KEY}, tmp_path) as server:
            pass
        assert not any("DEVELOPMENT KEY" in w for w in _warnings(server.stderr_path.read_text()))
    finally:
        await pool.close()
