"""Process assembly: builds Deps and runs the API server, workers and relay (together or alone)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import signal

from service import db, metrics, migrate, tracing
from service.api.server import SERVICE_NAMES, ApiServer
from service.audit_commit import GroupCommit
from service.audit_export import AuditExporter
from service.config import DEV_VAULT_KEY, Settings
from service.deps import Deps
from service.drivers.registry import default_registry
from service.erasure import Sweeper
from service.health_monitor import HealthMonitor
from service.monitoring.scheduler import Scheduler
from service.relay import Relay
from service.sampler import Sampler
from service.session_sweeper import SessionSweeper
from service.vault import KeyRing, Vault, VaultError
from service.worker import Worker

log = logging.getLogger("paylink")


def build_vault(settings: Settings) -> Vault:
    return Vault(KeyRing.parse(settings.vault_keys, settings.vault_primary_key))


def dev_key_ids(settings: Settings) -> list[str]:
    """Ids under which the key ring holds the public development key (whatever they are named)."""
    ring = KeyRing.parse(settings.vault_keys, settings.vault_primary_key)
    dev = base64.b64decode(DEV_VAULT_KEY)
    return [key_id for key_id in ring.key_ids if ring.key_bytes(key_id) == dev]


async def check_vault_keys(settings: Settings, pool: db.Pool) -> None:
    """Refuses to run with the public development key as the primary key once a production
    workspace exists (its users' passwords would be sealed with a key anyone can read); warns
    loudly whenever the development key is in the ring at all."""
    dev_ids = dev_key_ids(settings)
    if not dev_ids:
        return
    primary = KeyRing.parse(settings.vault_keys, settings.vault_primary_key).primary
    production = await pool.fetchval("SELECT count(*) FROM workspaces WHERE NOT sandbox")
    if primary in dev_ids and production:
        raise VaultError(
            f"PAYLINK_VAULT_KEYS: the primary key {primary!r} is the public development key and"
            f" {production} production workspace(s) exist; set PAYLINK_VAULT_KEYS to a key ring of your"
            " own (see docs/operations.md#key-rotation) and re-seal with `python -m service vault reencrypt`"
        )
    log.warning(
        "PAYLINK_VAULT_KEYS holds the PUBLIC DEVELOPMENT KEY: anything sealed with it (stored"
        " credentials) can be read by anyone; for local use only",
        extra={"key_ids": dev_ids, "primary": primary, "production_workspaces": production},
    )


async def build_deps(settings: Settings) -> Deps:
    vault = build_vault(settings)
    drivers = default_registry(
        latency=settings.sandbox_latency_seconds,
        slow_latency=settings.sandbox_slow_latency_seconds,
        jitter=settings.sandbox_latency_jitter_seconds,
        pending_delay=settings.pending_delay,
        session_lifetime=settings.sandbox_session_lifetime,
    )
    pool = await db.create_pool(settings)
    return Deps(settings=settings, pool=pool, vault=vault, drivers=drivers, audited=GroupCommit(pool))


@dataclasses.dataclass
class Running:
    """Handles to what one process runs; `stop` shuts down in order: RPCs, workers, relay."""

    deps: Deps
    api: ApiServer | None = None
    worker: Worker | None = None
    scheduler: Scheduler | None = None  # monitoring: queues due scheduled refreshes (with workers)
    relay: Relay | None = None
    privacy: tuple[AuditExporter, Sweeper] | None = None
    monitor: HealthMonitor | None = None
    sampler: Sampler | None = None
    sweeper: SessionSweeper | None = None
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)

    async def stop(self) -> None:
        grace = self.deps.settings.shutdown_grace_seconds
        for helper in (self.monitor, self.sampler, self.sweeper):
            if helper:
                helper.stop()
        if self.api:
            await self.api.stop(grace, self.deps.settings.shutdown_drain_seconds)
        if self.scheduler:
            self.scheduler.stop()
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
        tracing.shutdown()


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
    tracing.configure()  # spans always; OTLP export only when OTEL_* variables ask for it
    deps = await build_deps(settings)
    try:
        await check_vault_keys(settings, deps.pool)
    except BaseException:
        await deps.pool.close()
        raise
    running = Running(deps)
    if api:
        running.api = ApiServer(deps)
        await running.api.start()
        # Link sessions nobody else will end: dead logins (lease) and expired sessions.
        running.sweeper = SessionSweeper(deps)
        running.tasks.append(asyncio.create_task(running.sweeper.run(), name="sweeper"))
    if worker:
        running.worker = Worker(deps)
        running.tasks.append(asyncio.create_task(running.worker.run(), name="worker"))
        if settings.monitoring_scheduler:
            running.scheduler = Scheduler(deps)
            running.tasks.append(asyncio.create_task(running.scheduler.run(), name="scheduler"))
    if relay:
        running.relay = Relay(settings, deps.pool, deps.relay_wake)
        running.tasks.append(asyncio.create_task(running.relay.run(), name="relay"))
        # Beside the relay: the audit export to Kafka (and its retention), and the erasure sweep.
        running.privacy = (AuditExporter(settings, deps.pool), Sweeper(deps, settings.erasure_sweep_seconds))
        running.tasks.append(asyncio.create_task(running.privacy[0].run(), name="audit-export"))
        running.tasks.append(asyncio.create_task(running.privacy[1].run(), name="erasure-sweep"))
    # Health (and the paylink_dependency_up gauges) in every process; backlog gauges where jobs or
    # events are handled.
    health = running.api.health if running.api else None
    running.monitor = HealthMonitor(
        settings, deps.pool, health, SERVICE_NAMES, deps.release_guard, publishes=relay
    )
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
        base = f"http://{settings.metrics_host}:{settings.metrics_port}"
        where += f", metrics on {base}/metrics, readiness on {base}/ready"
    # Signal handlers before the banner: whoever waits for the banner may send SIGTERM at once.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    log.info(f"paylink serving {'+'.join(parts)}{where}")
    print(f"paylink serving {'+'.join(parts)}{where}", flush=True)
    await stop.wait()
    log.info("shutting down")
    await running.stop()
