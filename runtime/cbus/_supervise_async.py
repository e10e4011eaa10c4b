"""Supervision: check the database, start the consumers and helpers, restart, stop.

A consumer that fails restarts with a doubling backoff (`restart_backoff`) and, after
`give_up_after` failures in a row, stops the worker. The first SIGINT/SIGTERM stops
reading and lets the handlers in flight finish; a second one stops the worker
`stop_grace` seconds later, handlers running or not.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
from typing import Any

import psycopg

from . import _outage as outages
from ._acompat import (
    acancel,
    acancelled_by_worker,
    agather,
    asleep,
    aspawn,
    finished,
    monotonic,
)
from ._consume_async import Consumer
from ._handler_conn_async import HandlerConnection
from ._outage import RETRY_MAX, unreachable_message
from ._pruner_async import prune_in_background_async
from ._queries import query
from ._scheduler_async import Scheduler
from ._worker_domain import generated_package_of
from ._worker_dsn import unusable_database
from ._worker_failure import safe_str
from .errors import InstallError, WorkerFailed
from .install import schema_problem
from .roles import lacking_message

__all__ = ["Supervisor"]

log = logging.getLogger("cbus.worker")


class Supervisor(Consumer):
    """Runs the consumers and helpers, and stops them as signals and failures ask."""

    async def run(self, *, until_idle: bool = False) -> None:
        """Work until `stop()`, SIGINT or SIGTERM (or, with `until_idle`, until no work is due).

        With `until_idle` the worker does not LISTEN: it drains what is due, polling
        every `poll_interval` while work is due within a minute, and returns as soon
        as none is (a listener would hold the return for its wait on notifications).
        """
        # Signals first: a SIGTERM while the worker still checks its database stops
        # it cleanly once it has started, instead of killing the process.
        restore = self._install_signals()
        consumers: list[Any] = []
        helpers: list[Any] = []
        try:
            # The connection that checked the database is the first consumer's: its
            # backend is warm, and a connection fewer is opened before work starts.
            if self._checked_by_caller:
                # Checked just before with the other half (`cbus.Worker`): a server lost
                # since is the consumers' outage to wait out, not a failed start.
                self._checked_by_caller = False
            else:
                self._spare.append(await self._checked_connection())
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
                scheduler = Scheduler(  # ==== rate ====: the domains' schedules, if any
                    self._dsn, [d.spec for d in self._domains], connect_kwargs=self._connect_kwargs
                )
                if scheduler:
                    fire = functools.partial(scheduler.run, self._stopping)
                    helpers.append(
                        aspawn(self._keep_running, "scheduler", fire, name="cbus-scheduler")
                    )
                if self.prune_interval is not None:
                    helpers.append(
                        aspawn(self._keep_running, "pruner", self._prune, name="cbus-pruner")
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
            while self._spare:  # never taken: the worker stopped before its consumers ran
                spare, _ = self._spare.pop()
                await spare.close()
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
        conn, _ = await self._checked_connection()
        await conn.close()

    async def _checked_connection(self) -> tuple[HandlerConnection, set[str]]:
        """`check_database`'s connection once its checks passed, open, with the queues
        whose table has PGMQ 1.10's last_read_at (`_queues_with_last_read_at`)."""
        conn = await self._first_connection()
        try:
            modern = await self._check_on(conn)
        except BaseException:
            await conn.close()
            raise
        return conn, modern

    async def _check_on(self, conn: HandlerConnection) -> set[str]:
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
        # The schema is current: what is left is asked in one round trip.
        async with conn.pipeline():
            missed = await conn.execute(query("missing_queues"), {"queues": queues})
            grants = await conn.execute(query("worker_missing_grants"), {"queues": queues})
            applies = await conn.execute(query("rls_applies"))
            modern = await conn.execute(query("pgmq_last_read_at"), {"queues": queues})
        missing = {row[0] for row in await missed.fetchall()}
        absent = [r for r in self._domains if r.queue in missing]
        if absent:
            names = ", ".join(r.spec.name for r in absent)
            packages = " and ".join(sorted({generated_package_of(r.handlers) for r in absent}))
            raise InstallError(
                f"No PGMQ queue for domain {names}: run `cbus db install --domains "
                f"{packages}` (or each domain's generated `install(conn)`) first"
            )
        # A least-privilege role without a grant it needs would fail in odd ways
        # later (a message that cannot be set aside is delivered again and again).
        lacking = [row[0] for row in await grants.fetchall()]
        rls = await applies.fetchone()
        assert rls is not None
        if rls[0]:
            mine = [r.spec.name for r in self._domains]
            cur = await conn.execute(query("worker_missing_domains"), {"domains": mine})
            lacking += [f"consume rights in domain {row[0]}" for row in await cur.fetchall()]
        if lacking:
            packages = " ".join(sorted({generated_package_of(r.handlers) for r in self._domains}))
            raise InstallError(lacking_message(rls[1], lacking, packages))
        return {row[0] for row in await modern.fetchall()}

    async def _first_connection(self) -> HandlerConnection:
        extra: dict[str, Any] = {}
        if (
            "connect_timeout" not in self._dsn
            and "PGCONNECT_TIMEOUT" not in os.environ
            and "connect_timeout" not in self._connect_kwargs
        ):
            extra["connect_timeout"] = 10  # libpq waits for ever by default
        wait = outages.START_WAIT
        deadline, delay = monotonic() + wait, 0.1
        while True:
            try:
                return await self._connect(**extra)
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
        modern: set[str] | None = None
        try:
            # The checks' connection, which asked for last_read_at with them; atomic:
            # one consumer gets it.
            conn, modern = self._spare.pop()
        except IndexError:
            tried_at = monotonic()
            try:
                conn = await self._connect()
            except psycopg.OperationalError as exc:
                self._outage.lost(exc)  # said once for the whole worker (`Outage`)
                raise
            self._outage.back(tried_at)
        async with conn:
            if modern is None:
                modern = await self._queues_with_last_read_at(conn)
            await self._consume_on(conn, index, until_idle, modern)

    async def _queues_with_last_read_at(self, conn: HandlerConnection) -> set[str]:
        """The queues whose table has PGMQ 1.10's last_read_at, which the lease sets.

        Asked on every connection a consumer opens, so a PGMQ upgraded while the
        worker runs is picked up when the consumer next reconnects.
        """
        queues = [runtime.queue for runtime in self._domains]
        cur = await conn.execute(query("pgmq_last_read_at"), {"queues": queues})
        return {row[0] for row in await cur.fetchall()}

    async def _prune(self) -> None:
        """Retention in the background: one pass at a time per database (`_pruner`)."""
        assert self.prune_interval is not None
        await prune_in_background_async(
            self._dsn, self._connect_kwargs, self._stopping, self.prune_interval
        )

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
