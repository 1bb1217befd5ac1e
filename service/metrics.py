"""Prometheus metrics and readiness, served on PAYLINK_METRICS_PORT when it is not 0: `/metrics`, and
`/ready` (every process: the one HTTP check of a worker or relay, which have no gRPC port).

`/ready` answers 200 while the last health check (service/health_monitor.py) found what this kind of
process needs to do its work: the database answering and the release guard accepting this process's
code, and, in a process that runs the relay (it publishes events), a Kafka broker answering; else 503
(also before the first check and during shutdown). Its body is JSON: `ready`, `reason` (why not),
`database`, `kafka`, `kafka_required`, `release_refused`.
tests/cli/test_cli.py::test_a_worker_process_serves_ready_that_follows_the_release_guard and
::test_ready_requires_kafka_exactly_in_a_process_that_publishes_events, and
tests/faults/test_ready_follows_kafka.py prove it.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class LoopHistogram(Collector):
    """A labelled histogram observed without locks: for what only the event loop's thread observes
    (prometheus_client's Histogram takes a lock per bucket and per sum on every observation, and
    walks its buckets in Python; this is one bisect and two increments). A scrape, from the metrics
    server's thread, copies each child's counts in one step under the GIL, so what it reports is
    consistent (its `_count` is its `+Inf` bucket). Exposed like a Histogram (`_bucket`, `_count`,
    `_sum`), without `_created`."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = [float(b) for b in buckets]
        self._children: dict[tuple[str, ...], LoopHistogram.Child] = {}
        registry.register(self)

    class Child:
        __slots__ = ("_bounds", "counts")

        def __init__(self, bounds: list[float]) -> None:
            self._bounds = bounds
            self.counts: list[float] = [0] * (len(bounds) + 2)  # per bucket, +Inf, then the sum

        def observe(self, amount: float) -> None:
            counts = self.counts
            counts[bisect.bisect_left(self._bounds, amount)] += 1
            counts[-1] += amount

    def labels(self, *values: str) -> LoopHistogram.Child:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name}: expected labels {self._labelnames}, got {values}")
            child = self._children.setdefault(values, LoopHistogram.Child(self._bounds))
        return child

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in list(self._children.items()):
            counts = list(child.counts)  # one copy under the GIL: a consistent snapshot
            cumulative, buckets = 0.0, []
            for bound, count in zip([*self._bounds, math.inf], counts, strict=False):
                cumulative += count
                buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
            family.add_metric(list(values), buckets, counts[-1])
        yield family


RPC_LATENCY = LoopHistogram(
    "paylink_rpc_seconds",
    "RPC latency by method and status code",
    ["method", "code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
JOB_DURATION = LoopHistogram(  # observed by the worker on the event loop, once per job attempt
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
RELEASE_REFUSED = Gauge(
    "paylink_release_refused",
    "1 while the database's release guard refuses this process's code (a newer release migrated it;"
    " service/release_guard.py)",
)
DEPENDENCY_UP = Gauge(
    "paylink_dependency_up",
    "1 when the last reachability check succeeded (service/health_monitor.py)",
    ["dependency"],
)


@dataclasses.dataclass(frozen=True, slots=True)
class Readiness:
    """What `/ready` answers: set by the process's health monitor, read by the HTTP thread (one
    reference swapped whole: no lock)."""

    ready: bool
    reason: str = ""  # why not ready ("" when ready)
    database: bool | None = None
    kafka: bool | None = None
    kafka_required: bool = False  # the process publishes events (runs the relay): not ready without Kafka
    release_refused: bool = False


class _Current:
    readiness = Readiness(False, "starting: no health check yet")


def set_readiness(readiness: Readiness) -> None:
    _Current.readiness = readiness


def readiness() -> Readiness:
    return _Current.readiness


_StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _app(registry: CollectorRegistry) -> Callable[[dict[str, Any], _StartResponse], Iterable[bytes]]:
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/ready":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        now = _Current.readiness
        body = json.dumps(dataclasses.asdict(now)).encode() + b"\n"
        status = "200 OK" if now.ready else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape or probe every few seconds: not worth a log line


def serve(port: int, host: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY) -> WSGIServer | None:
    """Starts /metrics and /ready in a background thread (nothing when `port` is 0); the server."""
    if not port:
        return None
    family, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][::4]

    class Server(_Server):
        address_family = family

    httpd = make_server(str(addr[0]), port, _app(registry), Server, handler_class=_Quiet)
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    return httpd
