"""The consume loop: lease a batch, run its handlers, acknowledge in their transaction.

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
import heapq
import logging

import psycopg

from . import _versions as versions
from . import _wake
from ._acompat import acancelled_by_worker, aexecute_bare, current_caller, monotonic
from ._handler_conn_async import IDLE, INTRANS, HandlerConnection
from ._heartbeat_async import AlreadyRecorded, LeaseKeeper
from ._queries import query
from ._rate_async import take_starts
from ._worker_domain import DomainRuntime, LeaseSize, pending_query, read_query
from ._worker_failure import ack_params, encode_result
from ._worker_record_async import record_failure, set_aside, to_ended
from ._worker_triage import Delivery, Poison, triage
from .outcomes_async import commands_ended_async

__all__ = ["Consumer", "Replay"]

_ROLLBACK_SAVEPOINT = query("handler_rollback_savepoint")
_BEGIN, _COMMIT, _ROLLBACK = query("tx_begin"), query("tx_commit"), query("tx_rollback")
_MAX_SAVEPOINTS = 60  # below PostgreSQL's 64 cached subtransactions per transaction
_PROBE_ABOVE = 3  # domains: from four on, an idle round asks which have work first
_ASLEEP = 30.0  # s: a consumer that is not the poller waits this long unless woken


log = logging.getLogger("cbus.worker")


class Replay(Exception):
    """Roll the batch back and run its messages one transaction each."""

    def __init__(self, reason: str, end: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.end = end


class Consumer(LeaseKeeper):
    """What one consumer does on its connection, round after round."""

    async def _consume_on(
        self, conn: HandlerConnection, index: int, until_idle: bool, modern: set[str]
    ) -> None:
        """`modern`: the queues whose table has PGMQ 1.10's last_read_at, asked on this
        connection (`Supervisor._consume`)."""
        conn.owner = current_caller()
        domains = (
            self._domains[index % len(self._domains) :]
            + self._domains[: index % len(self._domains)]
        )
        wake = self._wakes[index]
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
                read = read_query(
                    runtime.queue, lease.size, runtime.queue in modern, runtime.lease_mode
                )
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
            await wake.wait_for(self._rate_wait(self._idle_wait(index, until_idle)))

    def _idle_wait(self, index: int, until_idle: bool) -> float:
        """How long a consumer that found nothing waits before its next round (ADR 0010).

        One consumer polls for all (the others wait to be woken), once per
        `poll_interval`; after work it comes back after LINGER s, doubling, so sends
        that carried no NOTIFY (another had just notified) are found within ms."""
        if until_idle:
            return self.poll_interval
        with self._counter_lock:
            if self._poller not in (None, index):
                return max(_ASLEEP, self.poll_interval)
            self._poller = index
            step, self._linger = self._linger, None
            if step is None or step >= self.poll_interval:
                step = self.poll_interval
            else:
                self._linger = step * 2
            self._poller_wait = step
        return step

    def _rate_wait(self, idle_wait: float) -> float:  # ==== rate ====
        """`idle_wait`, or less when a command held back by a rate limit is due sooner.

        Each due time held back wakes one consumer of this worker (it takes it off the heap).
        """
        with self._counter_lock:
            if not self._rate_due:
                return idle_wait
            wait = self._rate_due[0] - monotonic()
            if wait >= idle_wait:
                return idle_wait  # left for the consumer that waits after
            heapq.heappop(self._rate_due)
        return max(0.002, wait)

    async def _due(self, conn: HandlerConnection) -> set[str] | None:
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

    async def _idle(self, conn: HandlerConnection) -> bool:
        """No message due now or within a minute, none waiting for a retry, none in flight.

        A consumer that finds the worker idle wakes the others: those that waited
        for a busy sibling check again now, not a `poll_interval` later.
        """
        if self._busy:
            return False
        for runtime in self._domains:
            cur = await conn.execute(
                query(pending_query(runtime.lease_mode), runtime.queue),
                versions.pending_params(runtime.spec),
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
        conn: HandlerConnection,
        runtime: DomainRuntime,
        index: int,
        read: bytes,
        lease: LeaseSize,
    ) -> int:
        # Binary rows: message and headers come as bytea, `due_us` as an int (`read`).
        cur = conn.cursor(binary=True)
        asked = lease.size
        await cur.execute(read, runtime.read_params(self.audit_full, lease.after(monotonic())))
        rows = await cur.fetchall()
        lease.leased(asked, rows)
        if not rows:
            lease.forget()
            return 0
        with self._counter_lock:
            self._waiting.discard(index)
            self._linger = _wake.LINGER  # work came: the poller comes back soon
            poller = self._poller
            # The poller's own work: another consumer polls while it runs its
            # handlers. Another's: the poller, if it sleeps long, starts over.
            if poller == index or (poller is not None and self._poller_wait > 4 * _wake.LINGER):
                self._poller = None
            else:
                poller = None
        if poller is not None and poller != index:
            self._wakes[poller].set()
        if len(rows) >= lease.size or poller == index:
            self._wake_one()  # a full lease: more is probably waiting
        with self._counter_lock:
            self._busy += 1
        try:
            ready, poison = triage(runtime, rows)
            cap = None
            if runtime.rate is not None and ready:  # ==== rate ==== (ADR 0012)
                ready, waits = await take_starts(
                    conn, runtime.spec.name, runtime.queue, runtime.rate, ready
                )
                with self._counter_lock:
                    now = monotonic()
                    while self._rate_due and self._rate_due[0] < now:  # passed: forgotten
                        heapq.heappop(self._rate_due)
                    for wait in waits:
                        heapq.heappush(self._rate_due, now + wait)
                if waits:  # the limit held some back: lease no more than it let run
                    cap = 1 << (max(len(ready), 1).bit_length() - 1)
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
                    await set_aside(conn, runtime, p, self._observer)
                if ready:
                    started = monotonic()
                    await self._run_batch(conn, runtime, ready)
                    lease.record(len(ready), monotonic() - started)
                if cap is not None:  # rate
                    lease.size = min(lease.size, cap)
            finally:
                async with self._lease_lock:
                    for d in ready:
                        self._leases.pop((runtime.queue, d.msg_id), None)
        finally:
            with self._counter_lock:
                self._busy -= 1
        return len(rows)

    async def _run_batch(
        self, conn: HandlerConnection, runtime: DomainRuntime, batch: list[Delivery]
    ) -> None:
        start = 0
        while start < len(batch):
            try:
                start = await self._run_chunk(conn, runtime, batch, start)
            except Replay as replay:
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
                        await set_aside(conn, runtime, duplicate, self._observer)
                    else:
                        await self._run_one(conn, runtime, delivery)
                start = replay.end

    async def _still_leased(
        self, conn: HandlerConnection, runtime: DomainRuntime, delivery: Delivery
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
        self, conn: HandlerConnection, runtime: DomainRuntime, batch: list[Delivery], start: int
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
                        with self._observer.handling(delivery):
                            value = await self._call(conn, runtime, delivery)
                        delivery.result = encode_result(delivery, value)
                    except BaseException as exc:
                        # A handler's BaseException (SystemExit, its own CancelledError)
                        # fails its command alone; the batch goes on.
                        if acancelled_by_worker(exc):
                            raise
                        conn.in_handler = False
                        await self._undo_handler(conn)
                        if not isinstance(exc, AlreadyRecorded):
                            failures.append((delivery, exc))
                    else:
                        expected = INTRANS if conn.began else IDLE
                        if conn.pgconn.transaction_status != expected:
                            raise Replay("a handler left the transaction in a bad state")
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
                alone = conn.pgconn.transaction_status == IDLE and not failures and not endings
                if conn.pgconn.transaction_status == IDLE and not alone:
                    await aexecute_bare(conn, _BEGIN)
                # Alone, the acknowledgement is one atomic statement: a lost lease there
                # undoes nothing (no handler wrote), so it is only logged.
                await self._ack(conn, runtime, completed, strict=not alone)
                for delivery, error in failures:
                    await record_failure(conn, runtime, delivery, error, self._observer)
                if conn.pgconn.transaction_status != IDLE:
                    await aexecute_bare(conn, _COMMIT)
            except BaseException:
                await self._abandon(conn)
                raise
        except Replay as replay:
            replay.end = i
            raise
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            raise Replay(f"{type(exc).__name__}: {exc}", i) from exc
        self._count(len(completed), len(failures))
        return i

    async def _abandon(self, conn: HandlerConnection) -> None:
        """Roll back whatever the chunk had begun, leaving the connection idle."""
        if conn.closed or conn.pgconn.transaction_status == IDLE:
            return
        with contextlib.suppress(psycopg.Error):
            await aexecute_bare(conn, _ROLLBACK)

    async def _undo_handler(self, conn: HandlerConnection) -> None:
        if conn.savepoint_taken:
            try:
                await aexecute_bare(conn, _ROLLBACK_SAVEPOINT)
            except psycopg.Error as exc:
                raise Replay(f"cannot roll back the handler's savepoint: {exc}") from exc
        elif not conn.use_savepoints and conn.began:
            raise Replay("a handler failed in a batch without savepoints")
        elif conn.pgconn.transaction_status != (INTRANS if conn.began else IDLE):
            raise Replay("a failing handler left the transaction in a bad state")

    async def _run_one(
        self, conn: HandlerConnection, runtime: DomainRuntime, delivery: Delivery
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
                    with self._observer.handling(delivery):
                        value = await self._call(conn, runtime, delivery)
                finally:
                    conn.in_handler = False
                delivery.result = encode_result(delivery, value)
                if not await self._ack(conn, runtime, [delivery], strict=False):
                    log.warning(
                        "lease lost, handler's writes rolled back",
                        extra={"action": "lease_lost", "msg_id": delivery.msg_id},
                    )
                    raise Replay("lease lost")
        except (Replay, AlreadyRecorded):
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
            await record_failure(conn, runtime, delivery, failure, self._observer)
        self._count(0, 1)

    async def _ack(
        self,
        conn: HandlerConnection,
        runtime: DomainRuntime,
        completed: list[Delivery],
        *,
        strict: bool = True,
    ) -> bool:
        if not completed:
            return True
        # Waiters are woken at most once per few ms per worker (ADR 0010): they
        # re-read the log on their own steps in between.
        quiet = "" if _wake.due(conn, runtime.done_channel) else "_quiet"
        cur = await conn.execute(
            query("ack_completed" + quiet, runtime.queue),
            ack_params(runtime, completed, self.audit_full),
        )
        row = await cur.fetchone()
        acked, logged = (row[0], row[1]) if row is not None else (0, 0)
        if acked != len(completed) or logged != acked:
            lost, ended = len(completed) - acked, acked - logged
            if strict:
                raise Replay(
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
            to_ended(d, "SUCCESS")
            for d in completed
            if d.headers.reply_to is not None or d.headers.batch_id is not None
        ]
        if ended:
            await commands_ended_async(conn, runtime.spec.name, ended)
        self._observer.completed(runtime, completed)
        return True
