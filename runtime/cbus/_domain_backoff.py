"""Domain backoff: skip a domain whose statements fail for a while; the others go on."""

from __future__ import annotations

import logging
import threading

import psycopg

from ._acompat import monotonic
from ._worker_domain import DomainRuntime
from ._worker_failure import safe_str

__all__ = ["DomainBackoff"]

log = logging.getLogger("cbus.worker")


class DomainBackoff:
    """Skip a domain whose statements fail, for a while; the other domains go on."""

    # A domain whose statements fail is skipped for 0.5 s, doubling up to 60 s.
    domain_backoff: tuple[float, float] = (0.5, 60.0)
    _sick: dict[str, tuple[int, float]]  # queue -> (failures, retry at)
    _counter_lock: threading.Lock

    def _domain_due(self, runtime: DomainRuntime) -> bool:
        sick = self._sick.get(runtime.queue)
        return sick is None or monotonic() >= sick[1]

    def _domain_failed(self, runtime: DomainRuntime, exc: psycopg.Error) -> None:
        first, most = self.domain_backoff
        with self._counter_lock:
            failures = self._sick.get(runtime.queue, (0, 0.0))[0] + 1
            delay = min(first * 2 ** min(failures - 1, 30), most)
            self._sick[runtime.queue] = (failures, monotonic() + delay)
        log.warning(
            "domain %s failed (%s: %s); retried in %.1f s, the other domains go on",
            runtime.spec.name,
            type(exc).__name__,
            safe_str(exc).strip(),
            delay,
            extra={"action": "domain_failed", "domain": runtime.spec.name},
        )

    def _domain_ok(self, runtime: DomainRuntime) -> None:
        if runtime.queue not in self._sick:
            return
        with self._counter_lock:
            self._sick.pop(runtime.queue, None)
        log.info(
            "domain %s works again",
            runtime.spec.name,
            extra={"action": "domain_recovered", "domain": runtime.spec.name},
        )
