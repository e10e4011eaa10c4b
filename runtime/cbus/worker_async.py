"""The worker: lease messages, run their handlers, acknowledge in the handlers' transaction.

Each consumer owns one connection and loops: lease a batch (`read`: one statement
that also records each command on first receipt), run the handlers of the batch in
one transaction, and acknowledge them in that same transaction with one statement
that deletes the messages (matching read_ct, so a lost lease is noticed) and marks
their commands COMPLETED. A handler's writes through `ctx.conn` therefore commit if
and only if its command completes.

Handlers that never touch `ctx.conn` cost no savepoint; the first statement a handler
runs on it opens one, so a failing handler's writes roll back alone. Anything
unexpected (a lost lease, a savepoint the handler released) rolls the whole batch
back and replays it one message per transaction.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import msgspec
import psycopg
from psycopg import pq

from . import _outage as outages
from . import _versions as versions
from ._acompat import (
    AEvent,
    ALock,
    abounded,
    acancel,
    acancelled_by_worker,
    agather,
    asimple,
    asleep,
    aspawn,
    current_caller,
    finished,
    monotonic,
)
from ._outage import RETRY_MAX, Outage, server_of, unreachable_message
from ._queries import query
from ._send_base import channel
from ._worker_base import (
    Delivery,
    DomainRuntime,
    LeaseSize,
    Outcome,
    Poison,
    ack_params,
    classify,
    encode_result,
    read_query,
    safe_str,
    stub_package,
    triage,
    unusable_database,
    with_application_name,
)
from .context import AsyncContext
from .errors import BusinessError, InstallError, PermanentError, TransientError, WorkerFailed
from .install import schema_problem
from .outcomes_async import Ended, commands_ended_async
from .pgmq import RawJson, register_adapters
from .registry import domain_of
from .roles import lacking_message

__all__ = ["AsyncWorker"]

log = logging.getLogger("cbus.worker")

_SAVEPOINT = b"SAVEPOINT cbus_handler"
_BEGIN_SAVEPOINT = b"BEGIN; SAVEPOINT cbus_handler"
_IDLE = pq.TransactionStatus.IDLE
_INTRANS = pq.TransactionStatus.INTRANS
_ROLLBACK_SAVEPOINT = b"ROLLBACK TO SAVEPOINT cbus_handler"
_MAX_SAVEPOINTS = 60  # below PostgreSQL's 64 cached subtransactions per transaction
_PROBE_ABOVE = 3  # domains: from four on, an idle round asks which have work first


class _Replay(Exception):
    """Roll the batch back and run its messages one transaction each."""

    def __init__(self, reason: str, end: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.end = end


async def _arm(conn: Any) -> None:
    """Open the running handler's transaction or savepoint before its first statement."""
    if not isinstance(conn, _HandlerConnection):
        return
    conn.check_caller()
    opener = conn.claim_savepoint()
    if opener is not None:
        await asimple(conn, opener)


class _HandlerCursor(psycopg.AsyncCursor[Any]):
    """Opens the handler's savepoint just before its first statement."""

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        await _arm(self.connection)
        return await super().execute(query, params, **kwargs)

    async def executemany(self, *args: Any, **kwargs: Any) -> Any:
        await _arm(self.connection)
        return await super().executemany(*args, **kwargs)

    @contextlib.asynccontextmanager
    async def copy(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        await _arm(self.connection)
        async with super().copy(*args, **kwargs) as copy:
            yield copy

    async def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        await _arm(self.connection)
        async for row in super().stream(*args, **kwargs):  # noqa: RUF100, UP028 (sync twin)
            yield row


class _HandlerServerCursor(psycopg.AsyncServerCursor[Any]):
    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        await _arm(self.connection)
        return await super().execute(*args, **kwargs)


class _AlreadyRecorded(Exception):
    """The heartbeat recorded this attempt as timed out: roll back, do not acknowledge."""


class _HandlerConnection(psycopg.AsyncConnection[Any]):
    """A worker connection that knows whether the running handler has used it."""

    savepoint_armed = False
    savepoint_taken = False
    savepoints = 0
    began = False  # a handler statement opened the chunk's transaction
    use_savepoints = True
    in_handler = False
    owner: tuple[int, object] | None = None  # the consumer's thread and task
    timed_out = False  # the running handler's `timeout` passed: refuse its statements

    def check_caller(self) -> None:
        """Refuse a statement from a thread (or, outside a handler, a task) not the consumer's.

        A handler that left ctx.conn to a thread would otherwise write after it
        returned, and those rows would commit outside any command's outcome.
        """
        if self.timed_out:
            raise PermanentError(
                "TIMED_OUT", "The command's timeout passed: ctx.conn refuses statements"
            )
        if self.owner is None:
            return
        thread, task = current_caller()
        if thread != self.owner[0] or (task is not self.owner[1] and not self.in_handler):
            raise PermanentError(
                "CONNECTION_MISUSE",
                "ctx.conn used outside its handler (from another thread, or after the "
                "handler returned): a handler's connection is the worker's once it returns",
            )

    def claim_savepoint(self) -> bytes | None:
        """The statement opening the running handler's savepoint, when it needs one now.

        The batch's transaction opens with the first handler statement, in the same
        round trip: a batch whose handlers never touch ctx.conn needs none. Without
        savepoints, only that BEGIN.
        """
        if not self.savepoint_armed:
            return None
        self.savepoint_armed = False
        idle = self.pgconn.transaction_status == _IDLE
        self.began = self.began or idle
        if not self.use_savepoints:
            return b"BEGIN" if idle else None
        self.savepoints += 1
        self.savepoint_taken = True
        return _BEGIN_SAVEPOINT if idle else _SAVEPOINT

    @contextlib.asynccontextmanager
    async def transaction(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """A handler's `with ctx.conn.transaction()` nests in the batch's transaction.

        Without the handler's BEGIN or savepoint first, psycopg would open (and
        commit) a transaction of its own on the idle connection, and the block's
        writes, sends included, would stay even when the command does not complete.
        """
        await _arm(self)
        async with super().transaction(*args, **kwargs) as tx:
            yield tx

    # A handler that commits or rolls back would do it again on every attempt: a
    # PermanentError sends its command to the troubleshooting queue at once.
    async def commit(self) -> None:
        if self.in_handler:
            raise PermanentError(
                "CONNECTION_MISUSE",
                "A handler must not commit ctx.conn: the worker commits it with the "
                "acknowledgement, so the writes apply if and only if the command completes",
            )
        await super().commit()

    async def rollback(self) -> None:
        if self.in_handler:
            raise PermanentError(
                "CONNECTION_MISUSE",
                "A handler must not roll back ctx.conn: raise an exception instead, and "
                "the worker rolls back that handler's writes alone",
            )
        await super().rollback()


class AsyncWorker:
    """Runs the handlers of one or more domains until stopped.

    `handlers` are instances of subclasses of generated async stubs
    (`OrdersAsyncHandlers`). `concurrency` consumers each lease up to `batch_size`
    messages at a time. Wakes on NOTIFY from the senders, and polls every
    `poll_interval` seconds besides, since delayed messages and other PGMQ clients
    send no notification.

    With `savepoints=False`, the handlers of a batch share its transaction without a
    savepoint each: faster for handlers that write (ADR 0002), but a handler that
    fails after a neighbour wrote rolls the batch back, and the batch replays one
    message per transaction, running its neighbours' handlers again.
    """

    __module__ = "cbus"

    # A second SIGINT/SIGTERM stops the worker this many seconds later, handlers in
    # flight or not (docs/worker.md).
    stop_grace: float = 10.0
    # A consumer that fails restarts after 0.1 s, doubling up to 30 s until it gets
    # through a whole round of its domains; after this many failures in a row the
    # worker stops and `run` raises WorkerFailed.
    restart_backoff: tuple[float, float] = (0.1, 30.0)
    give_up_after: int = 8
    # A domain whose statements fail is skipped for 0.5 s, doubling up to 60 s.
    domain_backoff: tuple[float, float] = (0.5, 60.0)

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
        self._lease_sizes = {d.queue: LeaseSize(batch_size) for d in self._domains}
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
        self._idle_rounds = 0
        self._signals = 0  # stop signals received: the signal handler only counts them
        self._rounds = [0] * concurrency  # rounds that ran messages, per consumer
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

    async def _connect(self) -> _HandlerConnection:
        min_vt = min(d.visibility_timeout for d in self._domains)
        conn = await _HandlerConnection.connect(
            self._dsn, autocommit=True, cursor_factory=_HandlerCursor, **self._connect_kwargs
        )
        # A SET, not `options`: those would replace the user's own (DSN, PGOPTIONS,
        # service file), search_path included, on the connection handlers write with.
        await conn.execute(f"SET statement_timeout = {max(1000, min_vt * 500)}".encode())
        conn.server_cursor_factory = _HandlerServerCursor
        return conn

    async def run(self, *, until_idle: bool = False) -> None:
        """Work until `stop()`, SIGINT or SIGTERM (or, with `until_idle`, until no work is due).

        With `until_idle` the worker does not LISTEN: it drains what is due, polling
        every `poll_interval` while work is due within a minute, and returns as soon
        as none is (a listener would hold the return for its wait on notifications).
        """
        await self.check_database()
        restore = self._install_signals()
        consumers: list[Any] = []
        helpers: list[Any] = []
        try:
            consumers = [
                aspawn(self._supervise, i, until_idle, name=f"cbus-consumer-{i}")
                for i in range(self.concurrency)
            ]
            helpers = [
                aspawn(self._keep_running, "heartbeat", self._heartbeat, name="cbus-heartbeat")
            ]
            if not until_idle:
                helpers.append(
                    aspawn(self._keep_running, "listener", self._listen, name="cbus-listener")
                )
            forced = await self._wait_for_consumers(consumers)
            self.stop()
            self._finished.set()
            if forced:
                for task in (*consumers, *helpers):
                    acancel(task)
                raise WorkerFailed(
                    f"Stopped by a second signal after {self.stop_grace:g} s: handlers "
                    "still running were abandoned; their messages are delivered again"
                )
            await agather(*helpers, timeout=5)
            if self._gave_up:
                exc = self._gave_up[0]
                raise WorkerFailed(
                    f"A consumer cannot run ({self.give_up_after} failures in a row), "
                    f"the last: {type(exc).__qualname__}: {safe_str(exc)}"
                ) from exc
        except BaseException:
            # Cancelled from outside (or failed): nothing of this worker may run on.
            # A consumer cancelled mid-batch rolls back; its leases run out and the
            # messages are delivered again.
            self.stop()
            self._finished.set()
            for task in (*consumers, *helpers):
                acancel(task)
            raise
        finally:
            restore()

    async def _wait_for_consumers(self, consumers: list[Any]) -> bool:
        """Wait for the consumers to return; True when a second signal's grace ran out."""
        seen = 0
        deadline: float | None = None
        while not all(finished(c) for c in consumers):
            await agather(*consumers, timeout=0.2)
            if self._signals > seen:
                if seen == 0:
                    log.info(
                        "stop signal: finishing the handlers in flight (a second signal "
                        "stops within %g s)",
                        self.stop_grace,
                        extra={"action": "stopping"},
                    )
                    self.stop()
                seen = self._signals
                if seen >= 2 and deadline is None:
                    deadline = monotonic() + self.stop_grace
                    log.warning(
                        "second stop signal: stopping within %g s, running handlers or not",
                        self.stop_grace,
                        extra={"action": "stopping_hard"},
                    )
            if deadline is not None and monotonic() >= deadline:
                return True
        return False

    async def check_database(self) -> None:
        """Refuse to start on a server that does not answer, or a database whose cbus
        schema is missing or too old.

        Without it every lease would fail and each consumer would restart forever.
        A server that does not answer is tried again for `START_WAIT` seconds (it
        may be restarting), said once; once the worker runs, a server that goes
        away is waited for (`Outage`).
        """
        conn = await self._first_connection()
        async with conn:
            cur = await conn.execute(query("schema_installed"))
            row = await cur.fetchone()
            installed = None
            if row is not None and row[0]:
                cur = await conn.execute(query("schema_version"))
                row = await cur.fetchone()
                installed = int(row[0]) if row is not None and row[0] is not None else 0
            problem = schema_problem(installed)
            if problem is not None:
                raise InstallError(problem)
            queues = [runtime.queue for runtime in self._domains]
            cur = await conn.execute(query("missing_queues"), {"queues": queues})
            missing = {row[0] for row in await cur.fetchall()}
            absent = [r for r in self._domains if r.queue in missing]
            if absent:
                names = ", ".join(r.spec.name for r in absent)
                packages = " and ".join(sorted({stub_package(r.handlers) for r in absent}))
                raise InstallError(
                    f"No PGMQ queue for domain {names}: run `cbus db install --domains "
                    f"{packages}` (or each domain's generated `install(conn)`) first"
                )
            # A least-privilege role without a grant it needs would fail in odd ways
            # later (a message that cannot be set aside is delivered again and again).
            cur = await conn.execute(query("worker_missing_grants"), {"queues": queues})
            lacking = [row[0] for row in await cur.fetchall()]
            cur = await conn.execute(query("rls_applies"))
            rls = await cur.fetchone()
            assert rls is not None
            if rls[0]:
                mine = [r.spec.name for r in self._domains]
                cur = await conn.execute(query("worker_missing_domains"), {"domains": mine})
                lacking += [f"consume rights in domain {row[0]}" for row in await cur.fetchall()]
            if lacking:
                packages = " ".join(sorted({stub_package(r.handlers) for r in self._domains}))
                raise InstallError(lacking_message(rls[1], lacking, packages))

    async def _first_connection(self) -> psycopg.AsyncConnection[Any]:
        kwargs = dict(self._connect_kwargs)
        if "connect_timeout" not in self._dsn and "PGCONNECT_TIMEOUT" not in os.environ:
            kwargs.setdefault("connect_timeout", 10)  # libpq waits for ever by default
        wait = outages.START_WAIT
        deadline, delay = monotonic() + wait, 0.1
        while True:
            try:
                return await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, **kwargs)
            except psycopg.OperationalError as exc:
                refused = unusable_database(exc)
                if refused is not None:
                    raise InstallError(f"Cannot connect: {refused}") from exc
                if monotonic() + delay > deadline:
                    raise InstallError(unreachable_message(self._outage.where, exc)) from exc
                if delay == 0.1:
                    outages.waiting_for(self._outage.where, exc, wait)
                await asleep(delay)
                delay = min(delay * 2, 1.0)

    def _install_signals(self) -> Any:
        if not self.handles_signals or threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, lambda *_: self.note_signal())

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    # -- consumers ---------------------------------------------------------------

    async def _supervise(self, index: int, until_idle: bool) -> None:
        """Run consumer `index`, restarting it whatever it fails with.

        The backoff doubles from one failure to the next and starts over only once the
        consumer has run messages, or has run for the longest backoff, without failing:
        a connection that opens, or empty polls between failures, do not reset it.
        """
        first, most = self.restart_backoff
        backoff, failures = first, 0
        while not self._stopping.is_set():
            rounds, started = self._rounds[index], monotonic()
            try:
                await self._consume(index, until_idle)
                return
            except BaseException as exc:
                if acancelled_by_worker(exc):
                    raise
                failure = exc
            if self._rounds[index] > rounds or monotonic() - started >= most:
                backoff, failures = first, 0
            if isinstance(failure, psycopg.OperationalError):
                # The server is away or restarting: wait for it as long as it takes. An
                # outage is said when reconnecting fails (`Outage`), once per worker.
                if isinstance(failure, psycopg.errors.QueryCanceled):
                    log.warning(
                        "consumer %d: statement timed out: %s",
                        index,
                        failure,
                        extra={"action": "statement_timeout"},
                    )
                else:
                    log.debug(
                        "consumer %d: connection lost: %s (reconnecting in %.1f s)",
                        index,
                        failure,
                        backoff,
                        extra={"action": "connection_lost"},
                    )
                await self._stopping.wait_for(backoff)
                backoff = min(backoff * 2, most, RETRY_MAX)
                continue
            failures += 1
            gave_up = failures >= self.give_up_after
            log.error(
                "consumer %d failed (%s: %s), %s",
                index,
                type(failure).__qualname__,
                safe_str(failure),
                f"{failures} times in a row: stopping the worker"
                if gave_up
                else f"restarting in {backoff:.1f} s",
                exc_info=failure,
                extra={"action": "consumer_gave_up" if gave_up else "consumer_restarted"},
            )
            if gave_up:
                self._gave_up.append(failure)
                self.stop()
                return
            await self._stopping.wait_for(backoff)
            backoff = min(backoff * 2, most)

    async def _consume(self, index: int, until_idle: bool) -> None:
        try:
            conn = await self._connect()
        except psycopg.OperationalError as exc:
            self._outage.lost(exc)  # said once for the whole worker (`Outage`)
            raise
        self._outage.back()
        async with conn:
            await self._consume_on(conn, index, until_idle)

    async def _consume_on(self, conn: _HandlerConnection, index: int, until_idle: bool) -> None:
        conn.owner = current_caller()
        domains = (
            self._domains[index % len(self._domains) :]
            + self._domains[: index % len(self._domains)]
        )
        wake = self._wakes[index]
        modern = await self._modern_queues(conn)
        while not self._halted():
            # Counted as waiting from before the poll: a notification that comes while
            # this consumer polls sets its event, so the next wait returns at once.
            wake.clear()
            with self._counter_lock:
                self._waiting.add(index)
            worked = 0
            due = await self._due(conn)
            for runtime in domains:
                if self._halted():
                    break
                if not self._domain_due(runtime):
                    continue
                if due is not None and runtime.queue not in due and runtime.queue not in self._sick:
                    continue
                lease = self._lease_sizes[runtime.queue]
                read = read_query(runtime.queue, lease.size, runtime.queue in modern)
                try:
                    found = await self._poll(conn, runtime, index, read, lease)
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    # A statement of the worker's own failed for this domain (its
                    # queue dropped, a grant missing, a trigger): the other domains
                    # go on; its leased messages come back when their leases end.
                    await self._abandon(conn)
                    self._domain_failed(runtime, exc)
                    continue
                self._domain_ok(runtime)
                worked += found
            if worked:
                self._rounds[index] += 1
                continue
            if until_idle and await self._idle(conn):
                return
            await wake.wait_for(self.poll_interval)

    async def _due(self, conn: _HandlerConnection) -> set[str] | None:
        """The healthy domains with a message due now, when asking is cheaper than reading.

        With many domains, an idle round would cost one lease statement (and
        commit) per domain and consumer; one probe of all their queues costs one.
        None: read every domain. Failing domains are left to the lease itself.
        """
        healthy = [(i, r) for i, r in enumerate(self._domains) if r.queue not in self._sick]
        if len(healthy) <= _PROBE_ABOVE:
            return None
        probe = b" UNION ALL ".join(query("due_probe", r.queue, i) for i, r in healthy)
        try:
            cur = await conn.execute(probe)
            rows = await cur.fetchall()
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            await self._abandon(conn)
            return None  # a queue went away: the lease statements find which
        return {self._domains[row[0]].queue for row in rows}

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

    async def _modern_queues(self, conn: _HandlerConnection) -> set[str]:
        """The queues whose table has PGMQ 1.10's last_read_at, which the lease sets.

        Asked on every connection a consumer opens, so a PGMQ upgraded while the
        worker runs is picked up when the consumer next reconnects.
        """
        queues = [runtime.queue for runtime in self._domains]
        cur = await conn.execute(query("pgmq_last_read_at"), {"queues": queues})
        return {row[0] for row in await cur.fetchall()}

    async def _idle(self, conn: _HandlerConnection) -> bool:
        """No message due now or within a minute, none waiting for a retry, none in flight.

        A consumer that finds the worker idle wakes the others: those that waited
        for a busy sibling check again now, not a `poll_interval` later.
        """
        if self._busy:
            return False
        for runtime in self._domains:
            cur = await conn.execute(
                query("pending", runtime.queue), versions.pending_params(runtime.spec)
            )
            row = await cur.fetchone()
            if row and row[0]:
                return False
        if self._busy:
            return False
        for wake in self._wakes:
            wake.set()
        return True

    async def _poll(
        self,
        conn: _HandlerConnection,
        runtime: DomainRuntime,
        index: int,
        read: bytes,
        lease: LeaseSize,
    ) -> int:
        cur = conn.cursor()
        register_adapters(cur)
        await cur.execute(read, runtime.read_params(self.audit_full))
        rows = await cur.fetchall()
        if not rows:
            lease.forget()
            return 0
        with self._counter_lock:
            self._waiting.discard(index)
        if len(rows) >= lease.size:
            self._wake_one()  # a full lease: more is probably waiting
        with self._counter_lock:
            self._busy += 1
        try:
            ready, poison = triage(runtime, rows)
            async with self._lease_lock:
                for d in ready:
                    self._leases[(runtime.queue, d.msg_id)] = (
                        d.read_ct,
                        d.spec.options.visibility_timeout,
                    )
            try:
                # One read leases the whole batch for the domain's longest timeout;
                # commands that declare a shorter one get it back now, so a crash
                # redelivers them as soon as their schema says.
                await self._shorten_leases(conn, runtime, ready)
                for p in poison:
                    await self._set_aside(conn, runtime, p)
                if ready:
                    started = monotonic()
                    await self._run_batch(conn, runtime, ready)
                    lease.record(len(ready), monotonic() - started)
            finally:
                async with self._lease_lock:
                    for d in ready:
                        self._leases.pop((runtime.queue, d.msg_id), None)
        finally:
            with self._counter_lock:
                self._busy -= 1
        return len(rows)

    # -- the batch ---------------------------------------------------------------

    async def _run_batch(
        self, conn: _HandlerConnection, runtime: DomainRuntime, batch: list[Delivery]
    ) -> None:
        start = 0
        while start < len(batch):
            try:
                start = await self._run_chunk(conn, runtime, batch, start)
            except _Replay as replay:
                log.info(
                    "batch rolled back (%s), replaying %d message(s) one by one",
                    replay.reason,
                    replay.end - start,
                    extra={"action": "batch_replay"},
                )
                for delivery in batch[start : replay.end]:
                    if delivery.timed_out:
                        continue  # its failure is recorded: it must not run again
                    status = await self._still_leased(conn, runtime, delivery)
                    if status is None:
                        log.warning(
                            "lease lost, not run again",
                            extra={"action": "lease_lost", "msg_id": delivery.msg_id},
                        )
                    elif status not in ("PENDING", "IN_PROGRESS"):
                        duplicate = Poison(
                            delivery.msg_id,
                            delivery.read_ct,
                            f"Duplicate: the command already ended ({status})",
                            "DUPLICATE",
                            delivery.headers.command_id,
                            drop=True,
                            kind=delivery.spec.kind,
                        )
                        await self._set_aside(conn, runtime, duplicate)
                    else:
                        await self._run_one(conn, runtime, delivery)
                start = replay.end

    async def _still_leased(
        self, conn: _HandlerConnection, runtime: DomainRuntime, delivery: Delivery
    ) -> str | None:
        """The command's status if this delivery still holds its message, else None."""
        cur = await conn.execute(
            query("still_leased", runtime.queue),
            {
                "msg_id": delivery.msg_id,
                "read_ct": delivery.read_ct,
                "domain": runtime.spec.name,
                "command_id": delivery.headers.command_id,
            },
        )
        row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def _run_chunk(
        self, conn: _HandlerConnection, runtime: DomainRuntime, batch: list[Delivery], start: int
    ) -> int:
        """Run handlers from `start` and acknowledge them; returns where the next chunk starts.

        No transaction is opened until a handler's first statement (or a failure, a
        reply or a batch completion) needs one: a chunk of handlers that never touch
        `ctx.conn` is acknowledged by one autocommitted statement.
        """
        completed: list[Delivery] = []
        failures: list[tuple[Delivery, BaseException]] = []
        conn.savepoints = 0
        conn.began = False
        conn.use_savepoints = self.savepoints
        i = start
        try:
            try:
                while i < len(batch):
                    delivery = batch[i]
                    i += 1
                    conn.savepoint_armed = True
                    conn.savepoint_taken = False
                    conn.in_handler = True
                    try:
                        value = await self._call(conn, runtime, delivery)
                        delivery.result = encode_result(delivery, value)
                    except BaseException as exc:
                        # A handler's BaseException (SystemExit, its own CancelledError)
                        # fails its command alone; the batch goes on.
                        if acancelled_by_worker(exc):
                            raise
                        conn.in_handler = False
                        await self._undo_handler(conn)
                        if not isinstance(exc, _AlreadyRecorded):
                            failures.append((delivery, exc))
                    else:
                        expected = _INTRANS if conn.began else _IDLE
                        if conn.pgconn.transaction_status != expected:
                            raise _Replay("a handler left the transaction in a bad state")
                        completed.append(delivery)
                    finally:
                        conn.savepoint_armed = False
                        conn.in_handler = False
                    if conn.savepoints >= _MAX_SAVEPOINTS:
                        break
                endings = any(
                    d.headers.reply_to is not None or d.headers.batch_id is not None
                    for d in completed
                )
                alone = conn.pgconn.transaction_status == _IDLE and not failures and not endings
                if conn.pgconn.transaction_status == _IDLE and not alone:
                    await asimple(conn, b"BEGIN")
                # Alone, the acknowledgement is one atomic statement: a lost lease there
                # undoes nothing (no handler wrote), so it is only logged.
                await self._ack(conn, runtime, completed, strict=not alone)
                for delivery, error in failures:
                    await self._record_failure(conn, runtime, delivery, error)
                if conn.pgconn.transaction_status != _IDLE:
                    await asimple(conn, b"COMMIT")
            except BaseException:
                await self._abandon(conn)
                raise
        except _Replay as replay:
            replay.end = i
            raise
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            raise _Replay(f"{type(exc).__name__}: {exc}", i) from exc
        self._count(len(completed), len(failures))
        return i

    async def _abandon(self, conn: _HandlerConnection) -> None:
        """Roll back whatever the chunk had begun, leaving the connection idle."""
        if conn.closed or conn.pgconn.transaction_status == _IDLE:
            return
        with contextlib.suppress(psycopg.Error):
            await asimple(conn, b"ROLLBACK")

    def _count(self, completed: int, failed: int) -> None:
        with self._counter_lock:
            self.completed += completed
            self.failed += failed

    async def _undo_handler(self, conn: _HandlerConnection) -> None:
        if conn.savepoint_taken:
            try:
                await asimple(conn, _ROLLBACK_SAVEPOINT)
            except psycopg.Error as exc:
                raise _Replay(f"cannot roll back the handler's savepoint: {exc}") from exc
        elif not conn.use_savepoints and conn.began:
            raise _Replay("a handler failed in a batch without savepoints")
        elif conn.pgconn.transaction_status != (_INTRANS if conn.began else _IDLE):
            raise _Replay("a failing handler left the transaction in a bad state")

    async def _run_one(
        self, conn: _HandlerConnection, runtime: DomainRuntime, delivery: Delivery
    ) -> None:
        """One message in its own transaction: the slow, always-correct path.

        A failure of the handler, or of its acknowledgement (for example a database
        error while sending its reply), is recorded like any handler failure: retry
        after the backoff, or the troubleshooting queue once attempts are exhausted.
        """
        failure: BaseException | None = None
        try:
            async with conn.transaction():
                conn.savepoint_armed = False
                conn.in_handler = True
                try:
                    value = await self._call(conn, runtime, delivery)
                finally:
                    conn.in_handler = False
                delivery.result = encode_result(delivery, value)
                if not await self._ack(conn, runtime, [delivery], strict=False):
                    log.warning(
                        "lease lost, handler's writes rolled back",
                        extra={"action": "lease_lost", "msg_id": delivery.msg_id},
                    )
                    raise _Replay("lease lost")
        except (_Replay, _AlreadyRecorded):
            return
        except psycopg.OperationalError:
            raise
        except BaseException as exc:
            if acancelled_by_worker(exc):
                raise
            failure = exc
        if failure is None:
            self._count(1, 0)
            return
        async with conn.transaction():
            await self._record_failure(conn, runtime, delivery, failure)
        self._count(0, 1)

    async def _call(
        self, conn: _HandlerConnection, runtime: DomainRuntime, delivery: Delivery
    ) -> Any:
        """Run the handler; past the command's `timeout`, its attempt fails.

        An async handler is cancelled then. A sync one cannot be: the heartbeat
        records the failure, stops renewing the lease, marks `ctx.timed_out` and
        makes ctx.conn refuse statements (cancelling the one running); whatever the
        handler does after that is rolled back when it returns.
        """
        ctx = self._context(conn, delivery)
        timeout = delivery.spec.options.timeout
        if timeout is None:
            return await delivery.method(delivery.command, ctx)
        key = (runtime.queue, delivery.msg_id)
        deadline = monotonic() + timeout
        with self._counter_lock:
            delivery.ctx = ctx
            delivery.deadline = deadline
            self._deliveries[key] = delivery
        try:
            value = await abounded(delivery.method(delivery.command, ctx), timeout)
        except BaseException as exc:
            if not self._settle(conn, key, delivery) or acancelled_by_worker(exc):
                if isinstance(exc, TimeoutError) and monotonic() >= deadline:
                    raise TransientError(f"Timed out after {timeout:g} s", code="TIMEOUT") from None
                raise
            raise _AlreadyRecorded() from None
        if self._settle(conn, key, delivery):
            raise _AlreadyRecorded()
        return value

    def _settle(self, conn: _HandlerConnection, key: tuple[str, int], d: Delivery) -> bool:
        """The handler returned: True when the heartbeat already recorded it as timed out."""
        with self._counter_lock:
            d.deadline = None
            self._deliveries.pop(key, None)
            conn.timed_out = False
            return d.timed_out

    async def _expire(self, conn: psycopg.AsyncConnection[Any]) -> None:
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
            async with self._lease_lock:
                self._leases.pop(key, None)
            with contextlib.suppress(psycopg.Error):
                await d.ctx.conn.cancel_safe(timeout=2)
            timeout = d.spec.options.timeout
            async with conn.transaction():
                await self._record_failure(
                    conn,
                    self._runtimes[key[0]],
                    d,
                    TransientError(f"Timed out after {timeout:g} s", code="TIMEOUT"),
                )
            self._count(0, 1)

    def _context(self, conn: _HandlerConnection, d: Delivery) -> AsyncContext:
        return AsyncContext(
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

    async def _extend_now(self, d: Delivery, seconds: float) -> None:
        """`ctx.extend_lease`: renew one lease now, and keep the longer time from then on."""
        vt = max(1, math.ceil(seconds))
        key = (d.spec.queue, d.msg_id)
        async with self._lease_lock:
            if key in self._leases:
                self._leases[key] = (d.read_ct, max(vt, self._leases[key][1]))
        async with await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, **self._connect_kwargs
        ) as conn:
            await conn.execute(
                query("extend_lease", d.spec.queue),
                {
                    "msg_ids": [d.msg_id],
                    "read_cts": [d.read_ct],
                    "seconds": vt,
                    "domain": d.spec.domain,
                    "mark": True,
                },
            )

    async def _ack(
        self,
        conn: _HandlerConnection,
        runtime: DomainRuntime,
        completed: list[Delivery],
        *,
        strict: bool = True,
    ) -> bool:
        if not completed:
            return True
        cur = await conn.execute(
            query("ack_completed", runtime.queue), ack_params(runtime, completed, self.audit_full)
        )
        row = await cur.fetchone()
        acked, logged = (row[0], row[1]) if row is not None else (0, 0)
        if acked != len(completed) or logged != acked:
            lost, ended = len(completed) - acked, acked - logged
            if strict:
                raise _Replay(
                    f"{lost} lease(s) lost, {ended} command(s) ended by another delivery, "
                    "before the acknowledgement"
                )
            log.warning(
                "%d lease(s) lost, %d command(s) ended by another delivery (duplicates)",
                lost,
                ended,
                extra={"action": "lease_lost"},
            )
            return False
        ended = [
            _ended(d, "SUCCESS")
            for d in completed
            if d.headers.reply_to is not None or d.headers.batch_id is not None
        ]
        if ended:
            await commands_ended_async(conn, runtime.spec.name, ended)
        return True

    async def _record_failure(
        self,
        conn: psycopg.AsyncConnection[Any],
        runtime: DomainRuntime,
        delivery: Delivery,
        exc: BaseException,
    ) -> None:
        failure = classify(delivery, exc)
        command_id = delivery.headers.command_id
        extra = {
            "action": f"command_{failure.outcome.value}",
            "kind": delivery.spec.kind,
            "command_id": str(command_id),
            "attempt": delivery.read_ct,
        }
        # Business, permanent and transient errors are outcomes the handler chose; any
        # other exception is a bug or an outage, and its traceback what an operator
        # needs: once, when the command stops being retried. Earlier attempts say the
        # error in one line.
        expected = isinstance(exc, BusinessError | PermanentError | TransientError)
        log.log(
            logging.INFO if expected else logging.WARNING,
            "%s %s %s (attempt %d): %s%s",
            delivery.spec.kind,
            command_id,
            failure.outcome.value,
            delivery.read_ct,
            "" if expected else f"{failure.error_type}: ",
            failure.message,
            extra=extra,
            exc_info=None if expected or failure.outcome is Outcome.RETRY else exc,
        )
        detail: dict[str, Any] = {
            "type": failure.error_type,
            "code": failure.code,
            "message": failure.message,
        }
        if failure.details is not None:
            detail["details"] = msgspec.Raw(failure.details)
        await self._audit(conn, runtime, command_id, "failed", delivery.read_ct, detail)
        if failure.outcome is Outcome.RETRY:
            cur = await conn.execute(
                query("retry_later", runtime.queue),
                {
                    "domain": runtime.spec.name,
                    "command_id": command_id,
                    "msg_id": delivery.msg_id,
                    "read_ct": delivery.read_ct,
                    "backoff": failure.backoff,
                    "error_type": failure.error_type,
                    "error_code": failure.code,
                    "error_message": failure.message,
                },
            )
            if await cur.fetchone() is not None:
                await self._audit(
                    conn,
                    runtime,
                    command_id,
                    "retry_scheduled",
                    delivery.read_ct,
                    {"in_seconds": failure.backoff},
                )
            return
        if failure.outcome is Outcome.FAILED:
            cur = await conn.execute(
                query("delete_message", runtime.queue),
                {"msg_id": delivery.msg_id, "read_ct": delivery.read_ct},
            )
            if cur.rowcount != 1:
                return  # the lease was lost: whoever holds the message now decides
            status = "FAILED"
        else:
            cur = await conn.execute(
                query("archive_message", runtime.queue),
                {"msg_id": delivery.msg_id, "read_ct": delivery.read_ct},
            )
            if cur.rowcount != 1:
                return  # the lease was lost: whoever holds the message now decides
            status = "IN_TROUBLESHOOTING_QUEUE"
            await self._audit(
                conn, runtime, command_id, "moved_to_troubleshooting", delivery.read_ct, detail
            )
        await conn.execute(
            query("end_command"),
            {
                "domain": runtime.spec.name,
                "command_id": command_id,
                "status": status,
                "attempts": delivery.read_ct,
                "error_type": failure.error_type,
                "error_code": failure.code,
                "error_message": failure.message,
                "error_details": failure.details,
                "result": None,
                "msg_id": delivery.msg_id,
                "done_channel": runtime.done_channel,
            },
        )
        if status == "FAILED":
            ended = _ended(
                delivery,
                "FAILED",
                failure.code,
                failure.message,
                failure.error_type,
                failure.details,
            )
            await commands_ended_async(conn, runtime.spec.name, [ended])

    async def _set_aside(self, conn: _HandlerConnection, runtime: DomainRuntime, p: Poison) -> None:
        """Troubleshooting queue (or, for a duplicate, deletion) for a message that cannot run."""
        if p.grace is not None:  # a newer worker may run it: back to the queue, in grace
            cur = await conn.execute(
                query("wait_for_newer", runtime.queue), versions.wait_params(runtime, p)
            )
            if versions.left_for_newer(runtime, p, await cur.fetchone()):
                return
        log.warning(
            "message %s %s: %s",
            p.msg_id,
            "dropped" if p.drop else "set aside",
            p.reason,
            extra={
                "action": "duplicate" if p.drop else "poison",
                "code": p.code,
                "msg_id": p.msg_id,
            },
        )
        async with conn.transaction():
            if p.drop:
                await conn.execute(
                    query("delete_message", runtime.queue),
                    {"msg_id": p.msg_id, "read_ct": p.read_ct},
                )
            else:
                await conn.execute(
                    query("archive_message", runtime.queue),
                    {"msg_id": p.msg_id, "read_ct": p.read_ct},
                )
            if p.command_id is None:
                return
            detail = {"code": p.code, "message": p.reason, "msg_id": p.msg_id}
            if p.drop:
                await self._audit(
                    conn, runtime, p.command_id, "duplicate_dropped", p.read_ct, detail
                )
                return
            await self._audit(
                conn, runtime, p.command_id, "moved_to_troubleshooting", p.read_ct, detail
            )
            await conn.execute(
                query("set_aside"),
                {
                    "domain": runtime.spec.name,
                    "command_id": p.command_id,
                    "kind": p.kind or "unknown",
                    "version": p.version,
                    "attempts": p.read_ct,
                    "max_attempts": runtime.default_max_attempts,
                    "error_code": p.code,
                    "error_message": p.reason,
                    "msg_id": p.msg_id,
                    "done_channel": runtime.done_channel,
                },
            )

    async def _audit(
        self,
        conn: psycopg.AsyncConnection[Any],
        runtime: DomainRuntime,
        command_id: uuid.UUID,
        event: str,
        attempt: int | None,
        detail: dict[str, Any] | None,
    ) -> None:
        from . import codec

        await conn.execute(
            query("audit"),
            {
                "domain": runtime.spec.name,
                "command_id": command_id,
                "event": event,
                "attempt": attempt,
                "operator": None,
                "detail": RawJson(codec.encode(detail)) if detail is not None else None,
            },
        )

    # -- wake-ups and leases -----------------------------------------------------

    async def _listen(self) -> None:
        """LISTEN on each domain's channel and wake the consumers on every notification."""
        while not self._stopping.is_set():
            conn = None
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, **self._connect_kwargs
                )
                async with conn:
                    for runtime in self._domains:
                        await conn.execute(
                            psycopg.sql.SQL("LISTEN {}").format(
                                psycopg.sql.Identifier(channel(runtime.spec.name))
                            )
                        )
                    self._outage.back()
                    self._wake_one()
                    while not self._stopping.is_set():
                        async for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self._wake_one()
            except psycopg.OperationalError as exc:
                if conn is None:  # a dropped connection is tried again first
                    self._outage.lost(exc)
                await self._stopping.wait_for(1.0)

    async def _keep_running(self, name: str, target: Any) -> None:
        """Run the listener or the heartbeat until the worker finishes, whatever it raises."""
        backoff = 0.1
        while True:
            try:
                await target()
                return
            except BaseException as exc:
                if acancelled_by_worker(exc):
                    raise
                log.error(
                    "%s failed, restarting in %.1f s: %s: %s",
                    name,
                    backoff,
                    type(exc).__qualname__,
                    safe_str(exc),
                    exc_info=exc,
                    extra={"action": f"{name}_restarted"},
                )
            if await self._finished.wait_for(backoff):
                return
            backoff = min(backoff * 2, 5.0)

    async def _heartbeat(self) -> None:
        """Keep the leases of messages in flight alive while their handlers run.

        It runs until the consumers have returned, not until `stop()`: after a
        SIGTERM the handlers in flight still finish, and their leases must hold.
        """
        interval = max(self._min_vt / 3, 0.5)
        next_beat = monotonic() + interval
        conn: psycopg.AsyncConnection[Any] | None = None
        retry = 0.05
        try:
            while True:
                try:
                    if conn is None or conn.closed:
                        conn = None
                        conn = await psycopg.AsyncConnection.connect(
                            self._dsn, autocommit=True, **self._connect_kwargs
                        )
                        self._outage.back()
                    if monotonic() >= next_beat:
                        await self._extend_all(conn)
                        next_beat = monotonic() + interval
                    await self._expire(conn)
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
                            await conn.close()
                    conn = None
                    wait, retry = retry, min(retry * 2, interval)
                if await self._finished.wait_for(wait):
                    return
        finally:
            if conn is not None:
                await conn.close()

    async def _shorten_leases(
        self, conn: psycopg.AsyncConnection[Any], runtime: DomainRuntime, ready: list[Delivery]
    ) -> None:
        groups: dict[int, tuple[list[int], list[int]]] = {}
        for d in ready:
            vt = d.spec.options.visibility_timeout
            if vt < runtime.visibility_timeout:
                ids, cts = groups.setdefault(vt, ([], []))
                ids.append(d.msg_id)
                cts.append(d.read_ct)
        for vt, (ids, cts) in groups.items():
            await conn.execute(
                query("extend_lease", runtime.queue),
                {
                    "msg_ids": ids,
                    "read_cts": cts,
                    "seconds": vt,
                    "domain": runtime.spec.name,
                    "mark": False,
                },
            )

    async def _extend_all(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async with self._lease_lock:
            leases = dict(self._leases)
        groups: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
        for (queue, msg_id), (read_ct, vt) in leases.items():
            ids, cts = groups.setdefault((queue, vt), ([], []))
            ids.append(msg_id)
            cts.append(read_ct)
        domains = {d.queue: d.spec.name for d in self._domains}
        for (queue, vt), (ids, cts) in groups.items():
            try:
                await conn.execute(
                    query("extend_lease", queue),
                    {
                        "msg_ids": ids,
                        "read_cts": cts,
                        "seconds": vt,
                        "domain": domains[queue],
                        "mark": True,
                    },
                )
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


def _ended(
    d: Delivery,
    outcome: Literal["SUCCESS", "FAILED", "CANCELED"],
    code: str | None = None,
    message: str = "",
    error_type: str | None = None,
    details: bytes | None = None,
) -> Ended:
    return Ended(
        command_id=d.headers.command_id,
        correlation_id=d.headers.correlation_id,
        kind=d.spec.kind,
        outcome=outcome,
        reply_to=d.headers.reply_to,
        batch_id=d.headers.batch_id,
        result=d.result,
        error_code=code,
        error_message=message,
        error_type=error_type,
        error_details=details,
    )
