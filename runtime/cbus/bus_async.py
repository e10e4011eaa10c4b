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
from ._acompat import ALock
from ._cursors import send_cursor_async
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
from .context import AsyncContext
from .errors import DuplicateCommandError
from .targets import AsyncTarget

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

__all__ = ["AsyncBus", "AsyncTarget", "send_async", "send_many_async"]


async def send_async(
    target: AsyncTarget,
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
    if isinstance(target, AsyncBus):
        return await target.send(
            command,
            command_id=command_id,
            correlation_id=correlation_id,
            reply_to=reply_to,
            delay=delay,
            priority=priority,
        )
    causation_id = None
    if isinstance(target, AsyncContext):
        # Sent from a handler: it commits with the handler's command, and carries the
        # workflow's correlation_id on, naming the handler's command as its cause.
        correlation_id = correlation_id or target.correlation_id
        causation_id = target.command_id
        target = target.conn
    targets.check_async(target)  # a wrong target is a TypeError before anything else
    spec, params = send_params(
        command,
        command_id=command_id,
        correlation_id=correlation_id,
        reply_to=reply_to,
        delay=delay,
        priority=priority,
        causation_id=causation_id,
    )
    async with targets.joined_async(target) as conn:
        # A NOTIFY only when this process has not sent one to the domain a moment ago.
        notify = _wake.due(conn, spec.channel)
        statement = send_statement(spec, params, own_id=command_id is not None, notify=notify)
        try:
            cur = send_cursor_async(conn)  # tuple rows, whatever the caller's row_factory
            await cur.execute(statement, params)
        except psycopg.errors.UndefinedTable as exc:
            raise not_installed([spec], exc) from exc
        row = await cur.fetchone()
    if row is None:
        raise duplicate(spec, params)
    return SendResult(params["command_id"], params["correlation_id"], row[0], spec.kind)


async def send_many_async(
    target: AsyncTarget,
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
    if isinstance(target, AsyncBus):
        return await target.send_many(
            commands,
            command_ids=command_ids,
            correlation_id=correlation_id,
            reply_to=reply_to,
            delay=delay,
            batch_id=batch_id,
            priority=priority,
        )
    causation_id = None
    if isinstance(target, AsyncContext):
        correlation_id = correlation_id or target.correlation_id
        causation_id = target.command_id
        target = target.conn
    targets.check_async(target)
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
        async with targets.joined_async(target) as conn, conn.transaction():
            # Every statement in one round trip (pipeline mode: +17% on 100 commands,
            # ADR 0004), one statement per domain. A duplicate command_id raises below
            # and the transaction (or savepoint) rolls back what the groups enqueued.
            sent = []
            async with conn.pipeline():
                if batch_id is not None:
                    await conn.execute(
                        query("batch_insert"),
                        (batch_id, len(commands), reply_to, correlation_id),
                    )
                for group in groups:
                    params = {**group.log, **group.queue_params}
                    quiet = "" if _wake.due(conn, params["channel"]) else "_quiet"
                    statement = query(send_query + quiet, group.queue)
                    cur = conn.cursor(row_factory=tuple_row)
                    sent.append((group, await cur.execute(statement, params)))
            for group, cur in sent:
                new = {row[0]: row[1] for row in await cur.fetchall()}
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


class AsyncBus:
    """Sends commands in transactions of its own, from a pool.

    Use it where no business transaction is open; inside one, pass the connection to
    the sender instead so the command commits with the business data.
    """

    __module__ = "cbus"

    def __init__(self, dsn_or_pool: str | AsyncConnectionPool[Any], *, max_size: int = 4) -> None:
        if isinstance(dsn_or_pool, str):
            from psycopg_pool import AsyncConnectionPool  # imported when first needed

            # Autocommit: a send is one statement, its own transaction; send_many
            # opens one explicitly. Saves the BEGIN and COMMIT round trips.
            self._pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
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
        self._open_lock = ALock()

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        return self._pool

    async def open(self) -> AsyncBus:
        """Open the pool; the first send does it when nobody did."""
        async with self._open_lock:
            if self._owned and not self._opened:
                await self._pool.open(wait=True)
            self._opened = True
        return self

    async def close(self) -> None:
        async with self._open_lock:
            if self._owned and self._opened:
                await self._pool.close()
            self._opened = False

    async def __aenter__(self) -> AsyncBus:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(
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
            await self.open()
        async with self._pool.connection() as conn:
            return await send_async(
                conn,
                command,
                command_id=command_id,
                correlation_id=correlation_id,
                reply_to=reply_to,
                delay=delay,
                priority=priority,
            )

    async def send_many(
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
            await self.open()
        async with self._pool.connection() as conn:
            return await send_many_async(
                conn,
                commands,
                command_ids=command_ids,
                correlation_id=correlation_id,
                reply_to=reply_to,
                delay=delay,
                batch_id=batch_id,
                priority=priority,
            )
