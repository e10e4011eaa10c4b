# Generated from bus_async.py by tools/async_to_sync.py.
# DO NOT EDIT: change bus_async.py instead.
"""Sending commands: in the caller's transaction, or through a bus of its own.

A command sent on a connection joins that connection's transaction: it is recorded
and enqueued when the caller commits, and vanishes when the caller rolls back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import tuple_row

from . import _wake, targets
from ._acompat import Lock
from ._cursors import send_cursor
from ._queries import query
from ._send_base import (
    Delay,
    SendResult,
    duplicate,
    not_installed,
    send_many_params,
    send_params,
    send_statement,
)
from .context import Context
from .errors import DuplicateCommandError
from .targets import SyncTarget

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

__all__ = ["Bus", "SyncTarget", "send", "send_many"]


def send(
    target: SyncTarget,
    command: object,
    *,
    command_id: uuid.UUID | None = None,
    correlation_id: uuid.UUID | None = None,
    reply_to: str | None = None,
    delay: Delay = None,
    priority: int | None = None,
) -> SendResult:
    """Record and enqueue one command in one round trip.

    On a connection, the command commits or rolls back with the caller's transaction.
    On a handler's context, it joins the handler's transaction (sent if and only if
    the handler's command completes) and inherits its correlation_id.
    `delay` is seconds or a `timedelta` from now (negative is refused), or an aware
    datetime to run at; a datetime already past makes the command due at once.
    `priority` (0 to 9, higher first) overrides the schema's for this command.
    Raises `DuplicateCommandError` (and enqueues nothing) when the command_id was
    already sent in the domain, `ValidationError` when a field breaks its schema.
    """
    if isinstance(target, Bus):
        return target.send(
            command,
            command_id=command_id,
            correlation_id=correlation_id,
            reply_to=reply_to,
            delay=delay,
            priority=priority,
        )
    causation_id = None
    if isinstance(target, Context):
        # Sent from a handler: it commits with the handler's command, and carries the
        # workflow's correlation_id on, naming the handler's command as its cause.
        correlation_id = correlation_id or target.correlation_id
        causation_id = target.command_id
        target = target.conn
    targets.check(target)  # a wrong target is a TypeError before anything else
    spec, params = send_params(
        command,
        command_id=command_id,
        correlation_id=correlation_id,
        reply_to=reply_to,
        delay=delay,
        priority=priority,
        causation_id=causation_id,
    )
    with targets.joined(target) as conn:
        # A NOTIFY only when this process has not sent one to the domain a moment ago.
        notify = _wake.due(conn, spec.channel)
        statement = send_statement(spec, params, own_id=command_id is not None, notify=notify)
        try:
            cur = send_cursor(conn)  # tuple rows, whatever the caller's row_factory
            cur.execute(statement, params)
        except psycopg.errors.UndefinedTable as exc:
            raise not_installed([spec], exc) from exc
        row = cur.fetchone()
    if row is None:
        raise duplicate(spec, params)
    return SendResult(params["command_id"], params["correlation_id"], row[0], spec.kind)


def send_many(
    target: SyncTarget,
    commands: Sequence[object],
    *,
    command_ids: Sequence[uuid.UUID] | None = None,
    correlation_id: uuid.UUID | None = None,
    reply_to: str | None = None,
    delay: Delay = None,
    batch_id: uuid.UUID | None = None,
    priority: int | None = None,
) -> list[SendResult]:
    """Record and enqueue a group of commands atomically, through `pgmq.send_batch`.

    All or nothing: when any command_id was sent before, `DuplicateCommandError`
    names it and none of the group is enqueued. With `batch_id`, the group is a
    batch whose progress `cbus.batch_status` reports.
    """
    if isinstance(target, Bus):
        return target.send_many(
            commands,
            command_ids=command_ids,
            correlation_id=correlation_id,
            reply_to=reply_to,
            delay=delay,
            batch_id=batch_id,
            priority=priority,
        )
    causation_id = None
    if isinstance(target, Context):
        correlation_id = correlation_id or target.correlation_id
        causation_id = target.command_id
        target = target.conn
    targets.check(target)
    if not commands:
        return []
    groups, ids, correlations, specs = send_many_params(
        commands,
        command_ids=command_ids,
        correlation_id=correlation_id,
        reply_to=reply_to,
        delay=delay,
        batch_id=batch_id,
        priority=priority,
        causation_id=causation_id,
    )
    msg_ids: list[int] = [0] * len(commands)
    send_query = "send_many" if command_ids is not None else "send_many_new_ids"
    try:
        with targets.joined(target) as conn, conn.transaction():
            # Every statement in one round trip (pipeline mode: +17% on 100 commands,
            # ADR 0004), one statement per domain. A duplicate command_id raises below
            # and the transaction (or savepoint) rolls back what the groups enqueued.
            sent = []
            with conn.pipeline():
                if batch_id is not None:
                    conn.execute(
                        query("batch_insert"),
                        (batch_id, len(commands), reply_to, correlation_id),
                    )
                for group in groups:
                    params = {**group.log, **group.queue_params}
                    quiet = "" if _wake.due(conn, params["channel"]) else "_quiet"
                    statement = query(send_query + quiet, group.queue)
                    cur = conn.cursor(row_factory=tuple_row)
                    sent.append((group, cur.execute(statement, params)))
            for group, cur in sent:
                new = {row[0]: row[1] for row in cur.fetchall()}
                if len(new) != len(group.positions):
                    first = next(i for i in group.log["command_ids"] if i not in new)
                    raise DuplicateCommandError(group.domain, first)
                for position, command_id in zip(
                    group.positions, group.log["command_ids"], strict=True
                ):
                    msg_ids[position] = new[command_id]
    except psycopg.errors.UndefinedTable as exc:
        raise not_installed(specs, exc) from exc
    return [
        SendResult(ids[i], correlations[i], msg_ids[i], specs[i].kind) for i in range(len(commands))
    ]


class Bus:
    """Sends commands in transactions of its own, from a pool.

    Use it where no business transaction is open; inside one, pass the connection to
    the sender instead so the command commits with the business data.
    """

    __module__ = "cbus"

    def __init__(self, dsn_or_pool: str | ConnectionPool[Any], *, max_size: int = 4) -> None:
        if isinstance(dsn_or_pool, str):
            from psycopg_pool import ConnectionPool  # imported when first needed

            # Autocommit: a send is one statement, its own transaction; send_many
            # opens one explicitly. Saves the BEGIN and COMMIT round trips.
            self._pool: ConnectionPool[Any] = ConnectionPool(
                dsn_or_pool,
                min_size=1,
                max_size=max_size,
                open=False,
                kwargs={"autocommit": True},
            )
            self._owned = True
        else:
            self._pool = dsn_or_pool
            self._owned = False
        self._opened = False
        # Sends that start together on a bus nobody opened open its pool once.
        self._open_lock = Lock()

    @property
    def pool(self) -> ConnectionPool[Any]:
        return self._pool

    def open(self) -> Bus:
        """Open the pool; the first send does it when nobody did."""
        with self._open_lock:
            if self._owned and not self._opened:
                self._pool.open(wait=True)
            self._opened = True
        return self

    def close(self) -> None:
        with self._open_lock:
            if self._owned and self._opened:
                self._pool.close()
            self._opened = False

    def __enter__(self) -> Bus:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(
        self,
        command: object,
        *,
        command_id: uuid.UUID | None = None,
        correlation_id: uuid.UUID | None = None,
        reply_to: str | None = None,
        delay: Delay = None,
        priority: int | None = None,
    ) -> SendResult:
        """Send one command in its own transaction."""
        if not self._opened:
            self.open()
        with self._pool.connection() as conn:
            return send(
                conn,
                command,
                command_id=command_id,
                correlation_id=correlation_id,
                reply_to=reply_to,
                delay=delay,
                priority=priority,
            )

    def send_many(
        self,
        commands: Sequence[object],
        *,
        command_ids: Sequence[uuid.UUID] | None = None,
        correlation_id: uuid.UUID | None = None,
        reply_to: str | None = None,
        delay: Delay = None,
        batch_id: uuid.UUID | None = None,
        priority: int | None = None,
    ) -> list[SendResult]:
        """Send a group of commands atomically in its own transaction."""
        if not self._opened:
            self.open()
        with self._pool.connection() as conn:
            return send_many(
                conn,
                commands,
                command_ids=command_ids,
                correlation_id=correlation_id,
                reply_to=reply_to,
                delay=delay,
                batch_id=batch_id,
                priority=priority,
            )
