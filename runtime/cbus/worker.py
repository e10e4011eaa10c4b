"""`cbus.Worker`: threads for sync handlers, asyncio tasks for async ones, in one object."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from ._worker import SyncWorker
from ._worker_async import AsyncWorker
from .observed import observed
from .registry import AsyncHandlers, Handlers

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

__all__ = ["AsyncWorker", "Worker", "connection_of"]

# What a worker sets on its own connections, whatever a pool asks for: autocommit
# (it opens its transactions itself), tuples as rows, its cursor classes.
_WORKER_OWNS = frozenset({"autocommit", "row_factory", "cursor_factory"})


def connection_of(
    dsn_or_pool: str | ConnectionPool[Any] | AsyncConnectionPool[Any],
) -> tuple[str, dict[str, Any]]:
    """Workers hold dedicated connections; from a pool they take its conninfo and kwargs.

    The kwargs can carry what the conninfo does not (dbname, password, sslmode).
    """
    if isinstance(dsn_or_pool, str):
        return dsn_or_pool, {}
    conninfo = dsn_or_pool.conninfo
    if not isinstance(conninfo, str):
        raise TypeError("A worker needs a pool whose conninfo is a string")
    given = dsn_or_pool.kwargs
    if not isinstance(given, dict):
        raise TypeError("A worker needs a pool whose kwargs are a dict")
    return conninfo, {k: v for k, v in given.items() if k not in _WORKER_OWNS}


class Worker:
    """Runs handler objects until SIGINT/SIGTERM or `stop()`, finishing what is in flight.

    Sync handlers (subclasses of `OrdersHandlers`) run on `concurrency` threads;
    async handlers (subclasses of `OrdersAsyncHandlers`) on `concurrency` asyncio
    tasks in a loop of their own. A consumer leases up to `batch_size` messages at a
    time; `poll_interval` is how long an idle consumer waits without a notification;
    `audit="full"` records every delivery in the audit trail, not only failures;
    `savepoints=False` trades a handler's isolation for speed (ADR 0002).
    `metrics_port` serves `/metrics` and `/healthz` on `metrics_host` while `run`
    runs (the `metrics` extra; port 0 picks a free one, see `metrics_address`).
    """

    __module__ = "cbus"

    def __init__(
        self,
        dsn_or_pool: str | ConnectionPool[Any] | AsyncConnectionPool[Any],
        handlers: Sequence[Handlers | AsyncHandlers],
        *,
        concurrency: int = 4,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        audit: Literal["errors", "full"] = "errors",
        savepoints: bool = True,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> None:
        dsn, connect_kwargs = connection_of(dsn_or_pool)
        self._metrics_at = (metrics_host, metrics_port)
        self.metrics_address: str | None = None
        sync_handlers = [h for h in handlers if isinstance(h, Handlers)]
        async_handlers = [h for h in handlers if isinstance(h, AsyncHandlers)]
        others = [h for h in handlers if not isinstance(h, Handlers | AsyncHandlers)]
        if others or not handlers:
            names = ", ".join(type(h).__qualname__ for h in others) or "none given"
            raise TypeError(
                "Worker handlers must subclass a generated handler stub (for example "
                f"`shop.orders.OrdersHandlers`); got: {names}"
            )
        options: dict[str, Any] = {
            "concurrency": concurrency,
            "batch_size": batch_size,
            "poll_interval": poll_interval,
            "audit": audit,
            "savepoints": savepoints,
            "connect_kwargs": connect_kwargs,
        }
        self._sync = SyncWorker(dsn, sync_handlers, **options) if sync_handlers else None
        self._async = AsyncWorker(dsn, async_handlers, **options) if async_handlers else None
        if self._sync is not None and self._async is not None:
            self._async._outage = self._sync._outage  # one server, one line per outage

    @property
    def completed(self) -> int:
        return sum(w.completed for w in (self._sync, self._async) if w is not None)

    @property
    def failed(self) -> int:
        return sum(w.failed for w in (self._sync, self._async) if w is not None)

    def stop(self) -> None:
        """Stop reading; `run` returns once the messages in flight are done."""
        if self._sync is not None:
            self._sync.stop()
        if self._async is not None:
            self._async.stop()

    def run(self, *, until_idle: bool = False) -> None:
        """Work until stopped; with `until_idle`, return once no command is due within a minute."""
        halves = [w for w in (self._sync, self._async) if w is not None]
        with observed(self, halves, *self._metrics_at):
            self._run(until_idle)

    def _run(self, until_idle: bool) -> None:
        if self._async is None:
            assert self._sync is not None
            self._sync.run(until_idle=until_idle)
            return
        if self._sync is None:
            asyncio.run(self._async.run(until_idle=until_idle))
            return
        # One handler stops both halves; the sync half, run on this thread, would
        # otherwise replace it with its own and leave the async half running. It is
        # in place before the checks, so a SIGTERM during them stops the worker cleanly.
        self._sync.handles_signals = False
        restore = self._install_signals()
        try:
            # Both halves check the database before either starts: a half that cannot
            # start must not leave the other one running.
            self._sync.check_database()
            asyncio.run(self._async.check_database())
            self._sync._checked_by_caller = self._async._checked_by_caller = True
        except BaseException:
            restore()
            raise
        errors: list[BaseException] = []

        def run_async() -> None:
            assert self._async is not None and self._sync is not None
            try:
                asyncio.run(self._async.run(until_idle=until_idle))
            except BaseException as exc:
                errors.append(exc)
                self._sync.stop()

        thread = threading.Thread(target=run_async, name="cbus-async-worker", daemon=True)
        thread.start()
        try:
            self._sync.run(until_idle=until_idle)
        except BaseException:
            self._async.stop()  # the sync half failed: the async half must not run on
            raise
        finally:
            while thread.is_alive():
                thread.join(0.2)
            restore()
        if errors:
            raise errors[0]

    def _note_signal(self) -> None:
        # Only counts: each half stops itself (no lock taken in a signal handler).
        for half in (self._sync, self._async):
            if half is not None:
                half.note_signal()

    def _install_signals(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, lambda *_: self._note_signal())

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
