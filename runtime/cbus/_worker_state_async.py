"""What a worker holds while it runs, and the small steps every part of it shares.

The parts of the worker are layers over this state, each in a module of its own:
`_heartbeat_async` keeps the leases alive, `_consume_async` runs the batches,
`_supervise_async` starts, restarts and stops the consumers, and `_worker_async`
names the result `AsyncWorker`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

from psycopg import sql

from ._acompat import AEvent, ALock
from ._domain_backoff import DomainBackoff
from ._handler_conn_async import HandlerConnection, HandlerCursor, HandlerServerCursor
from ._outage import Outage, server_of
from ._queries import raw
from ._worker_domain import DomainRuntime
from ._worker_dsn import with_application_name
from ._worker_triage import Delivery
from .metrics import NullObserver, default_observer
from .registry import domain_of

__all__ = ["WorkerState"]


class WorkerState(DomainBackoff):
    """The options, events, locks and counters a worker's consumers and helpers share."""

    # A second SIGINT/SIGTERM stops the worker this many seconds later, handlers in
    # flight or not (docs/worker.md).
    stop_grace: float = 10.0
    # A consumer that fails restarts after 0.1 s, doubling up to 30 s until it gets
    # through a whole round of its domains; after this many failures in a row the
    # worker stops and `run` raises WorkerFailed.
    restart_backoff: tuple[float, float] = (0.1, 30.0)
    give_up_after: int = 8
    # Retention: a running worker prunes what is due this often (one pruner per
    # database at a time, an advisory lock; docs/retention.md); None: never.
    prune_interval: float | None = 60.0

    def __init__(
        self,
        dsn: str,
        handlers: Sequence[object],
        *,
        concurrency: int = 4,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        audit: str = "errors",
        savepoints: bool = True,
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not handlers:
            raise ValueError("A worker needs at least one handler object")
        if audit not in ("errors", "full"):
            raise ValueError("audit must be `errors` or `full`")
        for name, value in (("concurrency", concurrency), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be positive seconds, got {poll_interval!r}")
        self._connect_kwargs = connect_kwargs or {}
        self._dsn = with_application_name(dsn, self._connect_kwargs)
        self._outage = Outage(server_of(self._dsn, self._connect_kwargs))
        # The checked connection `run` hands to its first consumer (`_supervise_async`).
        self._spare: list[tuple[HandlerConnection, set[str]]] = []
        # Set by `cbus.Worker` once it has checked both halves of a mixed worker: the
        # next `run` starts its consumers without checking again.
        self._checked_by_caller = False
        self.savepoints = savepoints
        names = [domain_of(h).name for h in handlers]  # before any start-up warning
        if len(set(names)) != len(names):
            raise ValueError(f"Two handler objects serve the same domain: {names}")
        self._domains = [DomainRuntime.of(h) for h in handlers]
        self.concurrency = concurrency
        self.batch_size = batch_size
        # False when a `cbus.Worker` runs this beside a twin: its handler stops both.
        self.handles_signals = True
        # Shared by a domain's consumers: the first batches teach all of them.
        self._lease_sizes = {d.queue: d.lease_size(batch_size) for d in self._domains}
        self.poll_interval = poll_interval
        self.audit_full = audit == "full"
        self._stopping = AEvent()
        self._finished = AEvent()  # every consumer has returned: leases need no renewal
        # One event per consumer: a notification wakes one idle consumer, not all.
        self._wakes = [AEvent() for _ in range(self.concurrency)]
        self._waiting: set[int] = set()
        # (queue, msg_id) -> (read_ct, the command's visibility timeout)
        self._leases: dict[tuple[str, int], tuple[int, int]] = {}
        self._min_vt = min(
            c.options.visibility_timeout for d in self._domains for c in d.spec.commands
        )
        timeouts = [
            c.options.timeout
            for d in self._domains
            for c in d.spec.commands
            if c.options.timeout is not None
        ]
        # The heartbeat also notices attempts past their `timeout`, this often.
        self._watch = max(0.05, min(timeouts) / 4) if timeouts else math.inf
        self._runtimes = {d.queue: d for d in self._domains}
        self._deliveries: dict[tuple[str, int], Delivery] = {}
        self._lease_lock = ALock()
        self._busy = 0
        self._counter_lock = threading.Lock()
        self._observer: NullObserver = default_observer()  # cbus.metrics, cbus.tracing
        self._idle_rounds = 0
        # The consumer that polls while the others wait (None: whoever goes idle
        # next), and its next short wait after work (None: poll_interval).
        self._poller: int | None = None
        self._linger: float | None = None
        self._poller_wait = 0.0  # the poller's current wait, s
        self._signals = 0  # stop signals received: the signal handler only counts them
        self._rounds = [0] * concurrency  # rounds that ran messages, per consumer
        self._rate_due: list[float] = []  # rate: when commands held back are due (a heap)
        self._sick: dict[str, tuple[int, float]] = {}  # queue -> (failures, retry at)
        self._gave_up: list[BaseException] = []
        self.completed = 0
        self.failed = 0

    def stop(self) -> None:
        """Stop reading; messages in flight finish, then `run` returns."""
        self._stopping.set()
        for wake in self._wakes:
            wake.set()

    def note_signal(self) -> None:
        """A stop signal arrived: the first stops reading, the second starts the grace.

        Called in a signal handler, so it only counts: setting an event there takes
        its lock, which the interrupted thread may hold (a burst of signals deadlocked).
        """
        self._signals += 1

    def _halted(self) -> bool:
        """Stop reading: `stop()` ran, or a signal came that `run` has not seen yet."""
        return self._signals > 0 or self._stopping.is_set()

    def _wake_one(self) -> None:
        """Wake an idle consumer (if any): new work arrived, or more is likely."""
        with self._counter_lock:
            index = min(self._waiting) if self._waiting else None
            if index is not None:
                self._waiting.discard(index)
        if index is not None:
            self._wakes[index].set()

    def _count(self, completed: int, failed: int) -> None:
        with self._counter_lock:
            self.completed += completed
            self.failed += failed

    async def _connect(self, **extra: Any) -> HandlerConnection:
        min_vt = min(d.visibility_timeout for d in self._domains)
        kwargs = {**self._connect_kwargs, **extra}
        conn = await HandlerConnection.connect(
            self._dsn, autocommit=True, cursor_factory=HandlerCursor, **kwargs
        )
        # A SET, not `options`: those would replace the user's own (DSN, PGOPTIONS,
        # service file), search_path included, on the connection handlers write with.
        timeout_ms = sql.Literal(max(1000, min_vt * 500))
        try:
            await conn.execute(sql.SQL(raw("handler_statement_timeout")).format(ms=timeout_ms))
        except BaseException:
            await conn.close()  # a connection that failed its set-up is not left open
            raise
        conn.server_cursor_factory = HandlerServerCursor
        return conn
