"""examples/client.py, the fleet client (docs/deployment.md), against the test run's server: with the
published service config (examples/grpc_service_config.json) it creates a link token, and the token
is stored, although the target also lists an address that refuses connections."""

from __future__ import annotations

import json
import sys

from service import runtime
from service.config import Settings
from tests.cli.util import ROOT, free_port, run, service_env
from tests.harness import Client

CLIENT = [sys.executable, str(ROOT / "examples" / "client.py")]


def test_service_config_retries_unavailable_only_with_backoff() -> None:
    config = json.loads((ROOT / "examples" / "grpc_service_config.json").read_text())
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": ""}
    (method,) = config["methodConfig"]
    services = {name["service"] for name in method["name"]}
    assert services == {
        "paylink.v1.LinkTokenService",
        "paylink.v1.LinkService",
        "paylink.v1.AccountService",
        "paylink.v1.JobService",
        "paylink.v1.SandboxService",
    }
    policy = method["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert policy["maxAttempts"] == 5 and policy["backoffMultiplier"] == 2


async def test_example_client_creates_a_token_through_the_fleet_channel(
    app: runtime.Running, client: Client, settings: Settings
) -> None:
    assert app.api is not None
    target = f"ipv4:127.0.0.1:{free_port()},127.0.0.1:{app.api.port}"  # the first refuses connections
    result = await run(["--target", target, "--secret", client.secret], service_env(settings), program=CLIENT)
    assert result.code == 0, result.err
    token_id = result.out.strip().removeprefix("link token ")
    stored = await app.deps.pool.fetchval("SELECT end_user_id FROM link_tokens WHERE id = $1::uuid", token_id)
    assert stored == "example-user"
