"""Fleet harness (docs/deployment.md): stacks beside the fault tests' own one — a three-broker KRaft
cluster, a PostgreSQL primary with a synchronous streaming standby — and a gRPC channel over several
`api` processes that uses the published client configuration (examples/grpc_service_config.json).

Each extra stack is `scripts/stack.sh` in its own PAYLINK_STACK_DIR (.stack/faults-kafka3,
.stack/faults-pgpair) on ports 100 above the fault stack's, so it never touches another stack.
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import signal
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.client import AIOKafkaClient
from aiokafka.structs import TopicPartition

from tests.faults.cluster import (
    ADMIN_URL,
    BOOTSTRAP,
    KAFKA_PORT,
    PG_PORT,
    ROOT,
    pid_alive,
    run_stack,
    wait_until,
)
from tests.harness import stop_consumer

SERVICE_CONFIG_PATH = ROOT / "examples" / "grpc_service_config.json"
SERVICE_CONFIG = SERVICE_CONFIG_PATH.read_text()
# Channel arguments the client configuration adds to the service config (docs/deployment.md).
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

NODES = 3
CLUSTER_KAFKA_PORT = KAFKA_PORT + 100
PAIR_PG_PORT = PG_PORT + 100
PAIR_STANDBY_PORT = PAIR_PG_PORT + 1
NODE_STEP = 10  # scripts/stack.sh: node i on KAFKA_PORT + 10*(i-1)


def fleet_channel(ports: list[int]) -> grpc.aio.Channel:
    """One channel over every api process: round robin, client-side health checks, retries."""
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def metric(port: int, name: str) -> float:
    """Sum of a Prometheus counter's samples on one process's metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


class ExtraStack:
    """`scripts/stack.sh` in its own folder with its own ports; `destroy` removes it entirely."""

    def __init__(self, name: str, **env: str) -> None:
        self.dir = ROOT / ".stack" / name
        self.settings = env

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PAYLINK_DATABASE_URL", "PAYLINK_KAFKA_BOOTSTRAP", "PAYLINK_KAFKA_NODES")
        }
        env.update(
            PAYLINK_STACK_DIR=str(self.dir),
            PAYLINK_KAFKA_LIBS=str(ROOT / ".stack" / "kafka-libs"),  # the jars are shared
            **self.settings,
        )
        return env

    async def run(self, *args: str, check: bool = True) -> str:
        return await run_stack(self.env(), *args, check=check)

    async def up(self) -> None:
        await self.run("up")

    async def destroy(self) -> None:
        await self.run("down", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class KafkaCluster(ExtraStack):
    """Three KRaft nodes (broker + controller each) on CLUSTER_KAFKA_PORT + 0/10/20; PostgreSQL is the
    fault stack's."""

    admin_url = ADMIN_URL

    def __init__(self) -> None:
        super().__init__(
            "faults-kafka3",
            PAYLINK_KAFKA_NODES=str(NODES),
            PAYLINK_KAFKA_PORT=str(CLUSTER_KAFKA_PORT),
            PAYLINK_KAFKA_CONTROLLER_PORT=str(CLUSTER_KAFKA_PORT + 1),
            PAYLINK_DATABASE_URL=ADMIN_URL,  # not this stack's: never started or stopped here
        )
        self.ports = {n: CLUSTER_KAFKA_PORT + NODE_STEP * (n - 1) for n in range(1, NODES + 1)}
        self.bootstrap = ",".join(f"127.0.0.1:{port}" for port in self.ports.values())

    def pid(self, node: int) -> int:
        return int((self.dir / "kafka-cluster" / f"node{node}" / "kafka.pid").read_text().strip())

    def running(self, node: int) -> bool:
        try:
            return pid_alive(self.pid(node))
        except (OSError, ValueError):
            return False

    async def kill(self, node: int, sig: signal.Signals = signal.SIGKILL) -> None:
        pid = self.pid(node)
        os.kill(pid, sig)

        async def gone() -> bool:
            return not pid_alive(pid)

        await wait_until(gone, 90, f"Kafka node {node} to exit", interval=0.2)

    async def start_node(self, node: int) -> None:
        await self.run("kafka-node", str(node))

    async def partitions(self, prefix: str) -> dict[TopicPartition, tuple[int, list[int], list[int]]]:
        """Every partition of the topics under `prefix`: (leader, replicas, in-sync replicas)."""
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap)
        await client.bootstrap()
        try:
            cluster = await client.fetch_all_metadata()
        finally:
            await client.close()
        out = {}
        for topic in sorted(t for t in cluster.topics() if t.startswith(prefix)):
            for partition in cluster._partitions[topic].values():  # replicas and isr: not in the public API
                out[TopicPartition(topic, partition.partition)] = (
                    partition.leader,
                    list(partition.replicas),
                    list(partition.isr),
                )
        return out

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            return dict(await consumer.end_offsets(partitions))
        finally:
            await stop_consumer(consumer)

    async def topic_configs(self, topics: list[str], names: tuple[str, ...]) -> dict[str, dict[str, str]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            replies = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
            )
        finally:
            await admin.close()
        out: dict[str, dict[str, str]] = collections.defaultdict(dict)
        for reply in replies:
            for resource in reply.resources:
                _err, _msg, _type, topic, entries = resource[:5]
                for entry in entries:
                    if entry[0] in names:
                        out[topic][entry[0]] = entry[1]
        return dict(out)


class PostgresPair(ExtraStack):
    """A primary and its synchronous standby (pg_basebackup), and a multi-host DSN over both; Kafka is
    the fault stack's."""

    bootstrap = BOOTSTRAP
    admin_url = (
        f"postgresql://paylink:paylink@127.0.0.1:{PAIR_PG_PORT},127.0.0.1:{PAIR_STANDBY_PORT}/paylink"
        "?target_session_attrs=read-write"
    )

    def __init__(self) -> None:
        super().__init__(
            "faults-pgpair",
            PAYLINK_PG_PORT=str(PAIR_PG_PORT),
            PAYLINK_PG_STANDBY="1",
            PAYLINK_PG_STANDBY_PORT=str(PAIR_STANDBY_PORT),
            PAYLINK_KAFKA_BOOTSTRAP=BOOTSTRAP,  # not this stack's: never started or stopped here
        )
        self.primary_data = ""
        self.standby_data = ""

    async def up(self) -> None:
        await super().up()
        for line in (await self.run("status", check=False)).splitlines():
            if " data " in line:
                data = line.split(" data ", 1)[1].split()[0]
                if line.startswith("postgres:"):
                    self.primary_data = data
                elif line.startswith("standby:"):
                    self.standby_data = data
        assert self.primary_data and self.standby_data

    async def pg_ctl(self, data: str, *args: str) -> None:
        from tests.faults.cluster import _pg_ctl

        command = [_pg_ctl(), "-D", data, *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(process.communicate(), 120)
        if process.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} exited {process.returncode}: {out.decode()[-2000:]}")

    async def sync_state(self) -> str | None:
        """pg_stat_replication's sync_state of the standby, read by the superuser over the primary's
        unix socket (scripts/stack.sh: trust there, passwords over TCP)."""
        conn = await asyncpg.connect(
            host=str(Path(self.primary_data).parent / "run"),
            port=PAIR_PG_PORT,
            user="postgres",
            database="postgres",
        )
        try:
            state = await conn.fetchval(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'paylink_standby'"
            )
            return str(state) if state is not None else None
        finally:
            await conn.close()

    async def crash_primary(self) -> None:
        """`pg_ctl stop -m immediate`: the primary dies like a crash (no shutdown checkpoint)."""
        await self.pg_ctl(self.primary_data, "stop", "-m", "immediate", "-w", "-t", "60")

    async def promote_standby(self) -> None:
        await self.pg_ctl(self.standby_data, "promote", "-w", "-t", "60")
