"""Process assembly: builds Deps and runs the API server, workers and relay (together or alone)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal

from service import db, metrics, migrate
from service.api.server import SERVICE_NAMES, ApiServer
from service.audit_export import AuditExporter
from service.config import Settings
from service.deps import Deps
from service.drivers.registry import default_registry
from service.erasure import Sweeper
from service.health_monitor import HealthMonitor
from service.relay import Relay
from service.sampler import Sampler
from service.vault import KeyRing, Vault
from service.worker import Worker

log = logging.getLogger("paylink")


def build_vault(settings: Settings) -> Vault:
    return Vault(KeyRing.parse(settings.vault_keys, settings.vault_primary_key))


async def build_deps(settings: Settings) -> Deps:
    vault = build_vault(settings)
    drivers = default_registry(
        latency=settings.sandbox_latency_seconds,
        slow_latency=settings.sandbox_slow_latency_seconds,
        pending_delay=settings.pending_delay,
        jitter=settings.sandbox_latency_jitter_seconds,
    )
    pool = await db.create_pool(settings)
    return Deps(settings=settings, pool=pool, vault=vault, drivers=drivers)


@dataclasses.dataclass
class Running:
    """Handles to what one process runs; `stop` shuts down in order: RPCs, workers, relay."""

    deps: Deps
    api: ApiServer | None = None
    worker: Worker | None = None
    relay: Relay | None = None
    privacy: tuple[AuditExporter, Sweeper] | None = None
    monitor: HealthMonitor | None = None
    sampler: Sampler | None = None
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)

    async def stop(self) -> None:
        grace = self.deps.settings.shutdown_grace_seconds
        for helper in (self.monitor, self.sampler):
            if helper:
                helper.stop()
        if self.api:
            await self.api.stop(grace)
        if self.worker:
            self.worker.stop()
        if self.relay:
            # The relay flushes after the workers: their last outcomes are in the outbox too.
            worker_tasks = [t for t in self.tasks if t.get_name() == "worker"]
            if worker_tasks:
                await asyncio.wait(worker_tasks, timeout=grace + 5)
            self.relay.stop()
        if self.privacy:
            exporter, sweeper = self.privacy
            exporter.stop()
            sweeper.stop()
        if self.tasks:
            _, late = await asyncio.wait(self.tasks, timeout=grace + 10)
            for task in late:
                task.cancel()
        await self.deps.pool.close()


async def start(
    settings: Settings,
    *,
    api: bool = True,
    worker: bool = True,
    relay: bool = True,
    run_migrations: bool = True,
) -> Running:
    if run_migrations:
        await migrate.migrate(settings.database_url)
    deps = await build_deps(settings)
    running = Running(deps)
    if api:
        running.api = ApiServer(deps)
        await running.api.start()
    if worker:
        running.worker = Worker(deps)
        running.tasks.append(asyncio.create_task(running.worker.run(), name="worker"))
    if relay:
        running.relay = Relay(settings, deps.pool)
        running.tasks.append(asyncio.create_task(running.relay.run(), name="relay"))
        # Beside the relay: the audit export to Kafka (and its retention), and the erasure sweep.
        running.privacy = (AuditExporter(settings, deps.pool), Sweeper(deps, settings.erasure_sweep_seconds))
        running.tasks.append(asyncio.create_task(running.privacy[0].run(), name="audit-export"))
        running.tasks.append(asyncio.create_task(running.privacy[1].run(), name="erasure-sweep"))
    # Health (and the paylink_dependency_up gauges) in every process; backlog gauges where jobs or
    # events are handled.
    health = running.api.health if running.api else None
    running.monitor = HealthMonitor(settings, deps.pool, health, SERVICE_NAMES)
    await running.monitor.check()  # health and gauges reflect reality from the first moment
    running.tasks.append(asyncio.create_task(running.monitor.run(), name="health"))
    if worker or relay:
        running.sampler = Sampler(deps.pool, settings.metrics_sample_seconds)
        running.tasks.append(asyncio.create_task(running.sampler.run(), name="sampler"))
    return running


async def serve(settings: Settings, *, api: bool = True, worker: bool = True, relay: bool = True) -> None:
    """Runs until SIGTERM/SIGINT, then shuts down gracefully."""
    try:
        metrics.serve(settings.metrics_port, settings.metrics_host)
    except OSError as exc:
        raise OSError(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port} (PAYLINK_METRICS_PORT):"
            f" {exc.strerror or exc}"
        ) from exc
    running = await start(settings, api=api, worker=worker, relay=relay, run_migrations=api)
    parts = [name for name, on in (("api", api), ("worker", worker), ("relay", relay)) if on]
    where = f" on {settings.grpc_host}:{running.api.port}" if running.api else ""
    if settings.metrics_port:
        where += f", metrics on http://{settings.metrics_host}:{settings.metrics_port}/metrics"
    log.info(f"paylink serving {'+'.join(parts)}{where}")
    print(f"paylink serving {'+'.join(parts)}{where}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await running.stop()
