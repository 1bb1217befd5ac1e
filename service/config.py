"""Configuration from environment variables prefixed `PAYLINK_` (see docs/configuration.md)."""

from __future__ import annotations

import datetime as dt
import re

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A development key ring so `make run` works out of the box; production sets PAYLINK_VAULT_KEYS.
# This key is public (it is in this file): a process whose primary key it is refuses to start once a
# production (non-sandbox) workspace exists, and warns loudly otherwise (runtime.check_vault_keys).
DEV_VAULT_KEY = "ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE="
DEV_VAULT_KEYS = f"dev1:{DEV_VAULT_KEY}"


# A primary and its standbys in one DSN (docs/deployment.md): every connection, pooled or dedicated,
# tries the hosts in order and keeps the first that accepts writes, so paylink follows a failover
# without a restart. asyncpg understands the libpq form; both values below check the server's
# read-only state (PostgreSQL reports it on connect), so a hot standby is never chosen.
WRITABLE_SESSION_ATTRS = ("read-write", "primary")


def check_multi_host(url: str) -> None:
    """A DSN naming several hosts must say `target_session_attrs=read-write` (or `primary`): with
    libpq's default (`any`) a connection could land on a read-only standby and every write would fail."""
    rest = url.split("://", 1)[1]
    authority, _, tail = rest.partition("/")
    hosts = authority.rsplit("@", 1)[-1].split(",")
    if len(hosts) < 2:
        return
    query = tail.partition("?")[2]
    params = dict(part.partition("=")[::2] for part in query.split("&") if part)
    attrs = params.get("target_session_attrs", "")
    if attrs not in WRITABLE_SESSION_ATTRS:
        raise ValueError(
            "names several hosts, so it must end with ?target_session_attrs=read-write"
            f" (or primary), not {attrs or 'nothing'}: paylink writes and must never land on a standby"
        )


class Settings(BaseSettings):
    """Every setting paylink reads. Validated at start; a bad value stops the process with a message."""

    model_config = SettingsConfigDict(env_prefix="PAYLINK_", extra="ignore")

    database_url: str = "postgresql://paylink:paylink@127.0.0.1:25432/paylink"
    database_pool_size: int = Field(default=8, ge=1, le=100)
    # The longest one statement on a pooled connection may run, lock waits included (db.py).
    database_statement_timeout_seconds: float = Field(default=30.0, gt=0)
    kafka_bootstrap: str = "127.0.0.1:29092"
    topic_prefix: str = "paylink."

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    grpc_max_concurrent_rpcs: int = Field(default=1000, ge=1)
    grpc_max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    grpc_reuse_port: bool = False
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    shutdown_drain_seconds: float = Field(default=0.0, ge=0, le=60)  # NOT_SERVING before closing
    metrics_port: int = Field(default=0, ge=0, le=65535)  # 0: no metrics endpoint
    metrics_host: str = "127.0.0.1"
    metrics_sample_seconds: float = Field(default=5.0, gt=0)  # queue depth and outbox lag gauges
    health_check_seconds: float = Field(default=5.0, gt=0)  # database and Kafka reachability

    vault_keys: str = DEV_VAULT_KEYS
    vault_primary_key: str | None = None

    link_token_ttl_seconds: int = Field(default=15 * 60, ge=10, le=24 * 3600)
    max_login_attempts: int = Field(default=5, ge=1, le=20)
    link_session_ttl_seconds: int = Field(default=30 * 60, ge=10, le=24 * 3600)
    login_lease_seconds: float = Field(default=10.0, ge=1)  # a dead process's login ends after this
    login_retries: int = Field(default=3, ge=0, le=10)  # extra tries of a platform that is down
    login_retry_base_seconds: float = Field(default=0.5, ge=0)
    login_retry_max_seconds: float = Field(default=4.0, ge=0)

    worker_concurrency: int = Field(default=16, ge=1, le=10000)
    worker_lease_seconds: float = Field(default=30.0, ge=1)
    worker_poll_seconds: float = Field(default=2.0, gt=0)
    job_max_attempts: int = Field(default=5, ge=1, le=50)
    job_retry_base_seconds: float = Field(default=1.0, ge=0)
    job_retry_max_seconds: float = Field(default=60.0, ge=0)
    platform_call_timeout_seconds: float = Field(default=30.0, gt=0)
    platform_concurrency: int = Field(default=16, ge=1)

    monitoring_scheduler: bool = True  # worker processes claim due scheduled refreshes
    monitoring_tick_seconds: float = Field(default=5.0, gt=0)
    monitoring_batch_size: int = Field(default=500, ge=1, le=10000)
    monitoring_platform_concurrency: int = Field(default=64, ge=1)
    monitoring_daily_budget: int = Field(default=0, ge=0)  # per platform and UTC day; 0 = no budget
    monitoring_degraded_after: int = Field(default=3, ge=1, le=100)

    relay_batch_size: int = Field(default=500, ge=1, le=10000)
    relay_poll_seconds: float = Field(default=2.0, gt=0)
    outbox_retention_days: int = Field(default=30, ge=0)  # published events kept for replay; 0 = forever
    janitor_interval_seconds: float = Field(default=3600.0, gt=0)
    audit_retention_days: int = Field(default=365, ge=30)  # audit records kept; the database refuses less
    erasure_sweep_seconds: float = Field(default=5.0, gt=0)  # resumes interrupted or waiting erasures

    sandbox_latency_seconds: float = Field(default=0.0, ge=0)
    sandbox_latency_jitter_seconds: float = Field(default=0.0, ge=0)
    sandbox_slow_latency_seconds: float = Field(default=2.0, ge=0)
    sandbox_pending_delay_seconds: float = Field(default=60.0, ge=0)
    sandbox_session_seconds: float = Field(default=600.0, ge=0)  # a platform session's life; 0: none

    rate_link_tokens_per_minute: float = Field(default=600.0, ge=0)  # 0 disables
    rate_logins_per_minute: float = Field(default=120.0, ge=0)  # SubmitCredentials + SubmitMfa; 0 disables
    rate_create_jobs_per_minute: float = Field(default=120.0, ge=0)  # CreateJob calls; 0 disables

    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return upper

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a URL like postgresql://user:password@host:5432/dbname")
        check_multi_host(value)
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for entry in value.split(","):
            host, sep, port = entry.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("must be host:port[,host:port...], e.g. 127.0.0.1:9092")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{0,200}", value):
            raise ValueError("may only contain letters, digits, '.', '_' and '-'")
        return value

    @property
    def link_token_ttl(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.link_token_ttl_seconds)

    @property
    def link_session_ttl(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.link_session_ttl_seconds)

    @property
    def pending_delay(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.sandbox_pending_delay_seconds)

    @property
    def sandbox_session_lifetime(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.sandbox_session_seconds)
