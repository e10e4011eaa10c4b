"""Prometheus metrics and `/healthz` for a worker (contract section 10), on a thread.

A worker holds an observer (`NULL_OBSERVER` unless metrics are on): its hooks are
single calls at the points where a command ends, a handler runs, a lease is
renewed or a message is set aside. The null observer does nothing and allocates
nothing, so a worker without metrics pays one no-op call per hook.

The queue gauges come from `stats.domain_stats`, one statement for every domain,
run at most once every `QUEUE_CACHE` seconds whatever the scrape rate. `/healthz`
answers from a `SELECT 1` run every `HEALTH_EVERY` seconds on a connection of its
own. Both use their own connections, never a consumer's.

prometheus_client is imported only here (the `metrics` extra).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psycopg

from ._queries import raw

if TYPE_CHECKING:
    from ._worker_domain import DomainRuntime
    from ._worker_triage import Delivery, Poison

__all__ = [
    "NULL_OBSERVER",
    "MetricsServer",
    "DebugObserver",
    "NullObserver",
    "Observer",
    "TracingObserver",
    "default_observer",
    "serve",
]

QUEUE_CACHE = 5.0
"""Seconds a scrape reuses the last queue numbers."""

HEALTH_EVERY = 5.0
"""Seconds between two `SELECT 1` of the health check (it follows a change within 15 s)."""

log = logging.getLogger("cbus.worker")


class NullObserver:
    """What a worker without metrics holds: every hook does nothing."""

    def handling(self, delivery: Delivery) -> contextlib.AbstractContextManager[None]:
        return _NULL

    def completed(self, runtime: DomainRuntime, deliveries: Sequence[Delivery]) -> None:
        pass

    def ended(self, runtime: DomainRuntime, delivery: Delivery, status: str) -> None:
        pass

    def retried(self, runtime: DomainRuntime, delivery: Delivery) -> None:
        pass

    def set_aside(self, runtime: DomainRuntime, poison: Poison) -> None:
        pass

    def renewed(self, domain: str, count: int) -> None:
        pass


_NULL: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
NULL_OBSERVER = NullObserver()


class TracingObserver(NullObserver):
    """Without metrics, with OpenTelemetry: each handler runs in its consumer span."""

    def handling(self, delivery: Delivery) -> contextlib.AbstractContextManager[None]:
        from .tracing import processing, recording

        # No provider set: no span (a foreign traceparent has nowhere to go).
        return processing(delivery) if recording() else _NULL


class DebugObserver(NullObserver):
    """At DEBUG: one line per command that completes (failures are logged anyway)."""

    def __init__(self, inner: NullObserver) -> None:
        self._inner = inner

    def handling(self, delivery: Delivery) -> contextlib.AbstractContextManager[None]:
        return self._inner.handling(delivery)

    def completed(self, runtime: DomainRuntime, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            log.debug(
                "%s %s completed (attempt %d)",
                d.spec.kind,
                d.headers.command_id,
                d.read_ct,
                extra={
                    "action": "command_completed",
                    "kind": d.spec.kind,
                    "command_id": str(d.headers.command_id),
                    "attempt": d.read_ct,
                },
            )


def default_observer() -> NullObserver:
    """A worker's observer before any metrics: tracing's when OpenTelemetry is
    installed, with a line per completed command when `cbus.worker` logs DEBUG."""
    from .tracing import enabled

    base = TracingObserver() if enabled() else NULL_OBSERVER
    return DebugObserver(base) if log.isEnabledFor(logging.DEBUG) else base


class _Timed:
    __slots__ = ("_histogram", "_in_flight", "_inner", "_start")

    def __init__(
        self, histogram: Any, in_flight: Any, inner: contextlib.AbstractContextManager[None]
    ) -> None:
        self._histogram = histogram
        self._in_flight = in_flight
        self._inner = inner  # the span, when tracing
        self._start = 0.0

    def __enter__(self) -> None:
        self._in_flight.inc()
        self._inner.__enter__()
        self._start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self._histogram.observe(time.perf_counter() - self._start)
        self._in_flight.dec()
        self._inner.__exit__(*exc)


_OUTCOMES = ("completed", "failed", "in_troubleshooting_queue", "canceled")


class Observer(NullObserver):
    """Counts into a prometheus_client registry; label children bound once per kind."""

    def __init__(
        self,
        registry: Any,
        domains: Iterable[tuple[str, Iterable[str]]],
        inner: NullObserver = NULL_OBSERVER,
    ) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self._inner = inner

        commands = Counter(
            "cbus_commands",
            "Commands ended, by the status they ended with (retries not counted)",
            ["domain", "kind", "outcome"],
            registry=registry,
        )
        seconds = Histogram(
            "cbus_handler_seconds",
            "Handler run time, one observation per invocation",
            ["domain", "kind"],
            registry=registry,
        )
        retries = Counter(
            "cbus_retries", "Failed attempts scheduled again", ["domain", "kind"], registry=registry
        )
        in_flight = Gauge(
            "cbus_in_flight_commands", "Handlers running now", ["domain"], registry=registry
        )
        self._renewals = Counter(
            "cbus_lease_renewals", "Leases renewed by the heartbeat", ["domain"], registry=registry
        )
        self._set_aside = Counter(
            "cbus_set_aside",
            "Messages set aside without running (troubleshooting queue or dropped), by reason",
            ["domain", "reason"],
            registry=registry,
        )
        self._ends: dict[tuple[str, str, str], Any] = {}
        self._seconds: dict[tuple[str, str], Any] = {}
        self._retries: dict[tuple[str, str], Any] = {}
        self._in_flight: dict[str, Any] = {}
        for domain, kinds in domains:
            self._in_flight[domain] = in_flight.labels(domain)
            self._renewals.labels(domain)
            for kind in kinds:
                for outcome in _OUTCOMES:
                    self._ends[domain, kind, outcome] = commands.labels(domain, kind, outcome)
                self._seconds[domain, kind] = seconds.labels(domain, kind)
                self._retries[domain, kind] = retries.labels(domain, kind)

    def handling(self, delivery: Delivery) -> contextlib.AbstractContextManager[None]:
        key = (delivery.spec.domain, delivery.spec.kind)
        return _Timed(self._seconds[key], self._in_flight[key[0]], self._inner.handling(delivery))

    def completed(self, runtime: DomainRuntime, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            self._ends[runtime.spec.name, d.spec.kind, "completed"].inc()
        self._inner.completed(runtime, deliveries)

    def ended(self, runtime: DomainRuntime, delivery: Delivery, status: str) -> None:
        self._ends[runtime.spec.name, delivery.spec.kind, status.lower()].inc()

    def retried(self, runtime: DomainRuntime, delivery: Delivery) -> None:
        self._retries[runtime.spec.name, delivery.spec.kind].inc()

    def set_aside(self, runtime: DomainRuntime, poison: Poison) -> None:
        # Codes are the worker's fixed poison codes (DECODE_ERROR, UNKNOWN_KIND...).
        self._set_aside.labels(runtime.spec.name, poison.code).inc()

    def renewed(self, domain: str, count: int) -> None:
        self._renewals.labels(domain).inc(count)


class _Probe:
    """A connection of its own, reopened after a failure; one statement at a time."""

    def __init__(self, dsn: str, connect_kwargs: dict[str, Any]) -> None:
        self._dsn = dsn
        self._kwargs = connect_kwargs
        self._conn: psycopg.Connection[Any] | None = None
        self.lock = threading.Lock()

    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.Connection.connect(
                self._dsn, autocommit=True, connect_timeout=3, **self._kwargs
            )
        return self._conn

    def drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None


class _QueueCollector:
    """cbus_queue_messages, cbus_oldest_due_age_seconds, cbus_troubleshooting_commands."""

    def __init__(self, probe: _Probe, domains: set[str]) -> None:
        self._probe = probe
        self._domains = domains
        self._at = -QUEUE_CACHE
        self._found: list[Any] = []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from .stats import domain_stats

        with self._probe.lock:
            if time.monotonic() - self._at >= QUEUE_CACHE:
                try:
                    found = domain_stats(self._probe.conn())
                except psycopg.Error:
                    self._probe.drop()
                    found = []  # no numbers rather than stale ones
                self._found = [s for s in found if s.domain in self._domains]
                self._at = time.monotonic()
            found = self._found
        messages = GaugeMetricFamily(
            "cbus_queue_messages",
            "Messages in the domain's queue, by state",
            labels=["domain", "state"],
        )
        oldest = GaugeMetricFamily(
            "cbus_oldest_due_age_seconds",
            "Age of the oldest due message (0 when none is due)",
            labels=["domain"],
        )
        troubled = GaugeMetricFamily(
            "cbus_troubleshooting_commands",
            "Commands in the troubleshooting queue",
            labels=["domain"],
        )
        for s in found:
            messages.add_metric([s.domain, "due"], s.due)
            messages.add_metric([s.domain, "delayed"], s.delayed)
            messages.add_metric([s.domain, "in_flight"], s.in_flight)
            oldest.add_metric([s.domain], s.oldest_due_age)
            troubled.add_metric([s.domain], s.troubleshooting)
        yield from (messages, oldest, troubled)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadedServer(WSGIServer):
    daemon_threads = True


class MetricsServer:
    """`/metrics` and `/healthz` on a daemon thread; `close()` stops both threads."""

    def __init__(
        self,
        dsn: str,
        connect_kwargs: dict[str, Any],
        domains: list[tuple[str, list[str]]],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        try:
            from prometheus_client import CollectorRegistry, make_wsgi_app
        except ImportError:
            raise ImportError(
                "metrics need prometheus_client: pip install 'cbus[metrics]'"
            ) from None
        self.registry = CollectorRegistry()
        self.observer = Observer(self.registry, domains, default_observer())
        self._queues = _Probe(dsn, connect_kwargs)
        self._health = _Probe(dsn, connect_kwargs)
        self.registry.register(_QueueCollector(self._queues, {d for d, _ in domains}))
        self.healthy = False
        self.running = True
        self._stop = threading.Event()
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start: Any) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/healthz":
                ok = self.running and self.healthy
                start(
                    "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
                )
                return [b"ok\n" if ok else b"unavailable\n"]
            return metrics_app(environ, start)  # type: ignore[no-any-return]

        self._server = make_server(
            host, port, app, server_class=_ThreadedServer, handler_class=_Quiet
        )
        self.host, self.port = host, int(self._server.server_port)
        self._check()
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="cbus-metrics", daemon=True),
            threading.Thread(target=self._watch, name="cbus-health", daemon=True),
        ]
        for t in self._threads:
            t.start()

    @property
    def address(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def _check(self) -> None:
        try:
            self._health.conn().execute(raw("health_check"))
        except psycopg.Error:
            self._health.drop()
            self.healthy = False
        else:
            self.healthy = True

    def _watch(self) -> None:
        while not self._stop.wait(HEALTH_EVERY):
            self._check()

    def close(self) -> None:
        self.running = False
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for t in self._threads:
            t.join(5)
        self._queues.drop()
        self._health.drop()


def serve(
    dsn: str,
    connect_kwargs: dict[str, Any],
    runtimes: Sequence[DomainRuntime],
    host: str = "127.0.0.1",
    port: int = 0,
) -> MetricsServer:
    """A metrics server for these domains (their kinds' label children made now)."""
    domains = [(r.spec.name, [c.kind for c in r.spec.commands]) for r in runtimes]
    return MetricsServer(dsn, connect_kwargs, domains, host, port)
