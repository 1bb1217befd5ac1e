"""Prometheus metrics (served on PAYLINK_METRICS_PORT when it is not 0)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_LATENCY = Histogram(
    "paylink_rpc_seconds",
    "RPC latency by method and status code",
    ["method", "code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
JOB_DURATION = Histogram(
    "paylink_job_seconds",
    "Job attempt duration by job name, platform and result",
    ["name", "platform", "result"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30),
)
JOBS_FINISHED = Counter("paylink_jobs_finished_total", "Jobs that reached an outcome", ["name", "outcome"])
EVENTS_PUBLISHED = Counter("paylink_events_published_total", "Outbox events published to Kafka")
QUEUE_DEPTH = Gauge("paylink_job_queue_depth", "Jobs queued or pending")
OUTBOX_LAG = Gauge("paylink_outbox_unpublished", "Outbox events not yet published")
OUTBOX_OLDEST_AGE = Gauge("paylink_outbox_oldest_age_seconds", "Age of the oldest unpublished event")


def serve(port: int, host: str = "127.0.0.1") -> None:
    if port:
        start_http_server(port, addr=host)
