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
JOBS_FINISHED = Counter(
    "paylink_jobs_finished_total",
    "Jobs that reached a final outcome (error_code is empty on success)",
    ["name", "platform", "outcome", "error_code"],
)
LOGIN_RETRIES = Counter(
    "paylink_login_retries_total",
    "Link logins and re-accesses tried again because the platform was unavailable or timed out",
    ["error_code"],
)
LOGINS_IN_FLIGHT = Gauge("paylink_logins_in_flight", "Platform logins this process is waiting for")
# Read from the process's worker when scraped (service/worker.py).
WORKER_JOBS_HELD = Gauge(
    "paylink_worker_jobs_held", "Jobs this process's worker holds: claimed, their outcome not committed yet"
)
WORKER_PLATFORM_CALLS = Gauge(
    "paylink_worker_platform_calls_in_flight", "Jobs of this process's worker inside their platform calls"
)
WORKER_OUTCOMES_WAITING = Gauge(
    "paylink_worker_outcomes_waiting",
    "Outcomes this process's worker handed to its completer, not committed yet (claims stop past a bound)",
)
SCHEDULED_REFRESHES = Counter(
    "paylink_scheduled_refreshes_total", "Refresh jobs queued by the monitoring schedule"
)
UNCHANGED_REFRESHES = Counter(
    "paylink_unchanged_refreshes_total",
    "Scheduled refreshes whose data had not changed (no product event)",
    ["name"],
)
EVENTS_PUBLISHED = Counter("paylink_events_published_total", "Outbox events published to Kafka", ["event"])
RELAY_BATCH = Histogram(
    "paylink_relay_batch_seconds",
    "Time to publish one outbox batch (send, broker acks, mark published)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RELAY_LEADER = Gauge("paylink_relay_leader", "1 while this process's relay holds the leader lock")
# Sampled every PAYLINK_METRICS_SAMPLE_SECONDS by processes that run a worker or the relay
# (service/sampler.py); every such process reports the same value: aggregate with max().
QUEUE_DEPTH = Gauge(
    "paylink_job_queue_depth",
    "Jobs by state: runnable (queued or pending, due now), scheduled (waiting for a retry or a"
    " pending re-check), running",
    ["state"],
)
QUEUE_OLDEST_AGE = Gauge(
    "paylink_job_queue_oldest_age_seconds", "How long the oldest runnable job has waited"
)
OUTBOX_LAG = Gauge("paylink_outbox_unpublished", "Outbox events not yet published")
OUTBOX_OLDEST_AGE = Gauge("paylink_outbox_oldest_age_seconds", "Age of the oldest unpublished event")
DEPENDENCY_UP = Gauge(
    "paylink_dependency_up",
    "1 when the last reachability check succeeded (service/health_monitor.py)",
    ["dependency"],
)


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Starts the /metrics endpoint in a background thread (nothing when `port` is 0)."""
    if port:
        start_http_server(port, addr=host)
