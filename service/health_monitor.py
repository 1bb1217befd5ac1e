"""Keeps grpc.health.v1 and the `paylink_dependency_up` gauges in step with what the process needs.

Every PAYLINK_HEALTH_CHECK_SECONDS it runs `SELECT 1` on the pool and asks a Kafka broker for the
cluster's brokers (a metadata request naming no topic: one round trip, whatever the number of topics;
asking for every topic's metadata held the event loop for a fifth of a second at 700 topics, every
5 s, in every process). The overall service "" is SERVING only when both answer; each paylink.v1 service is
SERVING when the database answers — RPCs keep working while the broker is away (their events wait
in the outbox), so a load balancer that should keep routing during a broker outage checks a
service name such as `paylink.v1.LinkTokenService` instead of "".

With the database answering, it also probes the database's release guard (service/release_guard.py:
a write to `jobs` that touches no row): while the guard refuses this process's code (a newer release
migrated the database), every service is NOT_SERVING and `paylink_release_refused` is 1.

`/ready` on the metrics port (service/metrics.py) is the readiness check of every process, and the
only one of a worker or relay, which has no gRPC port: ready when the process can do its work. An
api or a worker needs the database and the guard's acceptance (the paylink.v1 services' verdict):
its events go to the outbox. A process that runs the relay (`relay`, `serve`: `publishes`) also
needs a Kafka broker answering: publishing is its work, and a standby relay that cannot reach the
broker cannot take over. It turns 503 when `stop` is called (shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest
from grpc_health.v1 import health_pb2

from service import db, metrics
from service.config import Settings
from service.release_guard import FIX, Guard

log = logging.getLogger("paylink.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthMonitor:
    def __init__(
        self,
        settings: Settings,
        pool: db.Pool,
        health: Any | None = None,  # grpc_health.v1.health.aio.HealthServicer of an API process
        service_names: Sequence[str] = (),
        release_guard: Guard | None = None,
        *,
        publishes: bool = False,  # runs the relay: /ready needs Kafka too
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._health = health
        self._services = tuple(service_names)
        self._guard = release_guard
        self._publishes = publishes
        self._kafka: AIOKafkaClient | None = None
        self._stopping = asyncio.Event()
        self.database_ok: bool | None = None
        self.kafka_ok: bool | None = None

    def stop(self) -> None:
        self._stopping.set()
        metrics.set_readiness(metrics.Readiness(False, "shutting down"))

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                await self.check()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._settings.health_check_seconds)
        finally:
            await self._close_kafka()

    async def check(self) -> tuple[bool, bool]:
        """Checks both dependencies once and publishes the result; returns (database, kafka)."""
        timeout = max(1.0, min(5.0, self._settings.health_check_seconds))
        database, kafka = await asyncio.gather(self._check_database(timeout), self._check_kafka(timeout))
        for name, ok, before in (("database", database, self.database_ok), ("kafka", kafka, self.kafka_ok)):
            metrics.DEPENDENCY_UP.labels(name).set(1 if ok else 0)
            if before is not None and ok != before:
                if ok:
                    log.info(f"{name} reachable again")
                else:
                    log.warning(f"{name} unreachable")
            elif before is None and not ok:
                log.warning(f"{name} unreachable")
        self.database_ok, self.kafka_ok = database, kafka
        if database and self._guard is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._guard.probe(self._pool)  # no answer: the state stays as it was
        refused = self._guard is not None and self._guard.refused
        serving = database and not refused  # the paylink.v1 services' verdict
        if not self._stopping.is_set():
            metrics.set_readiness(self._readiness(database, kafka, refused))
        if self._health is not None:
            await self._health.set("", SERVING if serving and kafka else NOT_SERVING)
            for service in self._services:
                await self._health.set(service, SERVING if serving else NOT_SERVING)
        return database, kafka

    def _readiness(self, database: bool, kafka: bool, refused: bool) -> metrics.Readiness:
        """What `/ready` answers after a check: the first thing this process misses, if any."""
        if not database:
            reason = "the database does not answer"
        elif refused:
            reason = f"release refused: {FIX}"
        elif self._publishes and not kafka:
            reason = "Kafka does not answer: this process publishes events (relay)"
        else:
            reason = ""
        return metrics.Readiness(not reason, reason, database, kafka, self._publishes, refused)

    async def _check_database(self, limit: float) -> bool:
        try:
            async with asyncio.timeout(limit):
                return bool(await self._pool.fetchval("SELECT 1") == 1)
        except Exception:
            return False

    async def _check_kafka(self, limit: float) -> bool:
        try:
            async with asyncio.timeout(limit):
                if self._kafka is None:
                    client = AIOKafkaClient(
                        bootstrap_servers=self._settings.kafka_bootstrap,
                        request_timeout_ms=int(limit * 1000),
                        client_id="paylink-health",
                    )
                    self._kafka = client
                    await client.bootstrap()  # fetches cluster metadata once
                    return True
                node = self._kafka.get_random_node()
                if node is None:
                    raise KafkaError("no broker known")
                await self._kafka.send(node, MetadataRequest([]))  # no topic: the brokers only
                return True
        except Exception:
            await self._close_kafka()  # start from the bootstrap servers next time
            return False

    async def _close_kafka(self) -> None:
        client, self._kafka = self._kafka, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
