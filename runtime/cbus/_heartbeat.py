# Generated from _heartbeat_async.py by tools/async_to_sync.py.
# DO NOT EDIT: change _heartbeat_async.py instead.
"""Wake-ups and leases: LISTEN, the heartbeat that renews leases, and the timeout watchdog.

A handler with a `timeout` runs under `_call`, which registers its delivery; the
heartbeat (`_expire`) records the attempts that run past it as failed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from typing import Any

import psycopg

from ._acompat import bounded, cancelled_by_worker, monotonic
from ._handler_conn import HandlerConnection
from ._queries import query, raw
from ._worker_domain import DomainRuntime
from ._worker_failure import safe_str
from ._worker_record import record_failure
from ._worker_state import WorkerState
from ._worker_triage import Delivery
from .context import Context
from .errors import TransientError
from .names import send_channel as channel

__all__ = ["AlreadyRecorded", "LeaseKeeper"]


log = logging.getLogger("cbus.worker")


class AlreadyRecorded(Exception):
    """The heartbeat recorded this attempt as timed out: roll back, do not acknowledge."""


class LeaseKeeper(WorkerState):
    """The worker's helpers beside its consumers: listener, heartbeat, watchdog."""

    def _listen(self) -> None:
        """LISTEN on each domain's channel and wake the consumers on every notification."""
        while not self._stopping.is_set():
            conn = None
            tried_at = monotonic()
            try:
                conn = psycopg.Connection.connect(
                    self._dsn, autocommit=True, **self._connect_kwargs
                )
                with conn:
                    for runtime in self._domains:
                        conn.execute(
                            psycopg.sql.SQL(raw("listen")).format(
                                channel=psycopg.sql.Identifier(channel(runtime.spec.name))
                            )
                        )
                    self._outage.back(tried_at)
                    self._wake_one()
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self._wake_one()
            except psycopg.OperationalError as exc:
                if conn is None:  # a dropped connection is tried again first
                    self._outage.lost(exc)
                self._stopping.wait_for(1.0)

    def _heartbeat(self) -> None:
        """Keep the leases of messages in flight alive while their handlers run.

        It runs until the consumers have returned, not until `stop()`: after a
        SIGTERM the handlers in flight still finish, and their leases must hold.
        """
        interval = max(self._min_vt / 3, 0.5)
        next_beat = monotonic() + interval
        conn: psycopg.Connection[Any] | None = None
        retry = 0.05
        try:
            while True:
                try:
                    if conn is None or conn.closed:
                        conn = None
                        tried_at = monotonic()
                        conn = psycopg.Connection.connect(
                            self._dsn, autocommit=True, **self._connect_kwargs
                        )
                        self._outage.back(tried_at)
                    if monotonic() >= next_beat:
                        self._extend_all(conn)
                        next_beat = monotonic() + interval
                    self._expire(conn)
                    retry = 0.05
                    wait = min(self._watch, max(0.0, next_beat - monotonic()))
                except Exception as exc:
                    # A dropped connection must not cost a lease: reconnect at once,
                    # backing off only while the server stays away.
                    if conn is None and isinstance(exc, psycopg.OperationalError):
                        self._outage.lost(exc)  # said once the server answers no new one
                    elif conn is None:
                        log.warning(
                            "heartbeat: %s", safe_str(exc), extra={"action": "heartbeat_failed"}
                        )
                    else:
                        if not isinstance(exc, psycopg.OperationalError):
                            log.warning(
                                "heartbeat: %s",
                                safe_str(exc),
                                extra={"action": "heartbeat_failed"},
                            )
                        with contextlib.suppress(Exception):
                            conn.close()
                    conn = None
                    wait, retry = retry, min(retry * 2, interval)
                if self._finished.wait_for(wait):
                    return
        finally:
            if conn is not None:
                conn.close()

    def _shorten_leases(
        self, conn: psycopg.Connection[Any], runtime: DomainRuntime, ready: list[Delivery]
    ) -> None:
        groups: dict[int, tuple[list[int], list[int]]] = {}
        for d in ready:
            vt = d.spec.options.visibility_timeout
            if vt < runtime.visibility_timeout:
                ids, cts = groups.setdefault(vt, ([], []))
                ids.append(d.msg_id)
                cts.append(d.read_ct)
        for vt, (ids, cts) in groups.items():
            conn.execute(
                query("extend_lease", runtime.queue),
                {
                    "msg_ids": ids,
                    "read_cts": cts,
                    "seconds": vt,
                    "domain": runtime.spec.name,
                    "mark": False,
                },
            )

    def _extend_all(self, conn: psycopg.Connection[Any]) -> None:
        with self._lease_lock:
            leases = dict(self._leases)
        groups: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
        for (queue, msg_id), (read_ct, vt) in leases.items():
            ids, cts = groups.setdefault((queue, vt), ([], []))
            ids.append(msg_id)
            cts.append(read_ct)
        domains = {d.queue: d.spec.name for d in self._domains}
        for (queue, vt), (ids, cts) in groups.items():
            try:
                conn.execute(
                    query("extend_lease", queue),
                    {
                        "msg_ids": ids,
                        "read_cts": cts,
                        "seconds": vt,
                        "domain": domains[queue],
                        "mark": True,
                    },
                )
                self._observer.renewed(domains[queue], len(ids))
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                # One domain's failure (its queue dropped) must not cost the others
                # their leases.
                log.warning(
                    "heartbeat: domain %s: %s",
                    domains[queue],
                    safe_str(exc).strip(),
                    extra={"action": "heartbeat_failed", "domain": domains[queue]},
                )

    def _extend_now(self, d: Delivery, seconds: float) -> None:
        """`ctx.extend_lease`: renew one lease now, and keep the longer time from then on."""
        vt = max(1, math.ceil(seconds))
        key = (d.spec.queue, d.msg_id)
        with self._lease_lock:
            if key in self._leases:
                self._leases[key] = (d.read_ct, max(vt, self._leases[key][1]))
        with psycopg.Connection.connect(self._dsn, autocommit=True, **self._connect_kwargs) as conn:
            conn.execute(
                query("extend_lease", d.spec.queue),
                {
                    "msg_ids": [d.msg_id],
                    "read_cts": [d.read_ct],
                    "seconds": vt,
                    "domain": d.spec.domain,
                    "mark": True,
                },
            )

    def _call(self, conn: HandlerConnection, runtime: DomainRuntime, delivery: Delivery) -> Any:
        """Run the handler; past the command's `timeout`, its attempt fails.

        An async handler is cancelled then. A sync one cannot be: the heartbeat
        records the failure, stops renewing the lease, marks `ctx.timed_out` and
        makes ctx.conn refuse statements (cancelling the one running); whatever the
        handler does after that is rolled back when it returns.
        """
        ctx = self._context(conn, delivery)
        timeout = delivery.spec.options.timeout
        if timeout is None:
            return delivery.method(delivery.command, ctx)
        key = (runtime.queue, delivery.msg_id)
        deadline = monotonic() + timeout
        with self._counter_lock:
            delivery.ctx = ctx
            delivery.deadline = deadline
            self._deliveries[key] = delivery
        try:
            value = bounded(delivery.method(delivery.command, ctx), timeout)
        except BaseException as exc:
            if not self._settle(conn, key, delivery) or cancelled_by_worker(exc):
                if isinstance(exc, TimeoutError) and monotonic() >= deadline:
                    raise TransientError(f"Timed out after {timeout:g} s", code="TIMEOUT") from None
                raise
            raise AlreadyRecorded() from None
        if self._settle(conn, key, delivery):
            raise AlreadyRecorded()
        return value

    def _settle(self, conn: HandlerConnection, key: tuple[str, int], d: Delivery) -> bool:
        """The handler returned: True when the heartbeat already recorded it as timed out."""
        with self._counter_lock:
            d.deadline = None
            self._deliveries.pop(key, None)
            conn.timed_out = False
            return d.timed_out

    def _expire(self, conn: psycopg.Connection[Any]) -> None:
        """Record the attempts that ran past their `timeout` as failed (sync handlers)."""
        now = monotonic()
        with self._counter_lock:
            late = [
                (key, d)
                for key, d in self._deliveries.items()
                if d.deadline is not None and now >= d.deadline
            ]
            for key, d in late:
                d.deadline = None
                d.timed_out = d.ctx.timed_out = d.ctx.conn.timed_out = True
                self._deliveries.pop(key, None)
        for key, d in late:
            with self._lease_lock:
                self._leases.pop(key, None)
            with contextlib.suppress(psycopg.Error):
                d.ctx.conn.cancel_safe(timeout=2)
            timeout = d.spec.options.timeout
            with conn.transaction():
                record_failure(
                    conn,
                    self._runtimes[key[0]],
                    d,
                    TransientError(f"Timed out after {timeout:g} s", code="TIMEOUT"),
                    self._observer,
                )
            self._count(0, 1)

    def _context(self, conn: HandlerConnection, d: Delivery) -> Context:
        return Context(
            command_id=d.headers.command_id,
            correlation_id=d.headers.correlation_id,
            attempt=d.read_ct,
            max_attempts=d.max_attempts,
            kind=d.spec.kind,
            domain=d.spec.domain,
            batch_id=d.headers.batch_id,
            conn=conn,
            lease_extender=functools.partial(self._extend_now, d),
        )
