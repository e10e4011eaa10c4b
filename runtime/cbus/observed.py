"""What a `cbus.Worker` says while it runs: its start and stop lines, and its metrics.

The start line names the domains (with their commands' versions), concurrency,
batch size, poll interval and metrics address; the stop line the counts. Both are
log records with an `action` key, so `--log-format json` prints them as JSON.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["observed"]

log = logging.getLogger("cbus.worker")


def _domains(halves: Sequence[Any]) -> dict[str, str]:
    """Each domain's commands as `kind@version`, comma separated."""
    return {
        d.spec.name: ",".join(f"{c.kind}@{c.version}" for c in d.spec.commands)
        for w in halves
        for d in w._domains
    }


@contextlib.contextmanager
def observed(worker: Any, halves: Sequence[Any], host: str, port: int | None) -> Iterator[None]:
    """Metrics served (when `port` is set) and start/stop lines around a worker's run."""
    server = None
    if port is not None:
        from .metrics import serve

        first = halves[0]
        server = serve(
            first._dsn,
            first._connect_kwargs,
            [d for w in halves for d in w._domains],
            host,
            port,
        )
        worker.metrics_address = server.address
        for w in halves:
            w._observer = server.observer
    first = halves[0]
    domains = _domains(halves)
    log.info(
        "worker started: %s; concurrency %d, batch size %d, poll interval %g s; metrics %s",
        "; ".join(f"{name} ({kinds})" for name, kinds in domains.items()),
        first.concurrency,
        first.batch_size,
        first.poll_interval,
        worker.metrics_address or "off",
        extra={
            "action": "worker_started",
            "domains": domains,
            "concurrency": first.concurrency,
            "batch_size": first.batch_size,
            "poll_interval": first.poll_interval,
            "metrics": worker.metrics_address,
        },
    )
    try:
        yield
    finally:
        if server is not None:
            server.close()
        # `failed` counts attempts that failed, retried ones included, not commands.
        log.info(
            "worker stopped: %d completed, %d failed attempts",
            worker.completed,
            worker.failed,
            extra={
                "action": "worker_stopped",
                "completed": worker.completed,
                "failed": worker.failed,
            },
        )
