"""Request/reply and workflows: wait for a command's outcome, follow a batch, trace a flow.

Waiting LISTENs on the domain's `cbus_done_<domain>` channel, which the worker
notifies in the transaction that ends a command (at most once per few ms per
worker, `cbus._wake`), and re-reads the command log on each notification and on
steps of its own (5 ms doubling to 1 s, from 5 ms again after each notification),
which find the commands that ended without one.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from . import _acompat as compat
from . import _wake, targets
from ._queries import query, raw
from .bus_async import AsyncBus
from .errors import NotFoundError, ReplyTimeout
from .names import BATCH_CHANNEL, ENDED, IN_TROUBLESHOOTING, done_channel
from .store import CommandRecord, get_command_async
from .targets import AsyncWaitTarget

__all__ = ["BatchStatus", "batch_status_async", "trace_async", "wait_batch_async", "wait_for_async"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchStatus:
    """A batch's progress, counted from the command log (no counter row to contend on)."""

    batch_id: uuid.UUID
    total: int
    created_at: dt.datetime
    completed_at: dt.datetime | None
    pending: int
    in_progress: int
    completed: int
    failed: int
    in_troubleshooting: int
    canceled: int

    __module__ = "cbus"

    @property
    def done(self) -> bool:
        """Every command of the batch has ended (its completion message was sent)."""
        return self.completed_at is not None


@asynccontextmanager
async def _listening(
    target: AsyncWaitTarget, channel: str
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    if isinstance(target, AsyncBus):
        await target.open()
        target = target.pool
    async with targets.listener_async(target) as conn:
        if not conn.autocommit:
            raise ValueError(
                "Waiting needs a connection in autocommit mode (a notification arrives only "
                "between transactions): pass a cbus.Bus, or a connection with autocommit=True"
            )
        listen = sql.SQL(raw("listen")).format(channel=sql.Identifier(channel))
        await conn.execute(listen)
        try:
            yield conn
        finally:
            await conn.execute(sql.SQL(raw("unlisten")).format(channel=sql.Identifier(channel)))


async def _pause(conn: psycopg.AsyncConnection[Any], deadline: float, step: float = 1.0) -> bool:
    """Wait for a notification, at most `step` s (and not past the deadline); True if one came."""
    remaining = deadline - compat.monotonic()
    woken = False
    if remaining > 0:
        async for _ in conn.notifies(timeout=min(remaining, step), stop_after=1):
            woken = True
    return woken


async def wait_for_async(
    target: AsyncWaitTarget,
    domain: str,
    command_id: uuid.UUID,
    *,
    timeout: float = 30.0,
    include_troubleshooting: bool = True,
) -> CommandRecord:
    """Wait until the command ends, and return its record.

    Returns on COMPLETED, FAILED and CANCELED, and (unless `include_troubleshooting`
    is false) on IN_TROUBLESHOOTING_QUEUE, where an operator must act. Raises
    `cbus.ReplyTimeout` after `timeout` seconds; the command may still end later.
    Raises `cbus.NotFoundError` at once for a command_id the log does not know.
    """
    ends = ENDED + ((IN_TROUBLESHOOTING,) if include_troubleshooting else ())
    deadline = compat.monotonic() + timeout
    # The worker notifies a domain's waiters at most once per few ms (ADR 0010): an
    # acknowledgement without a NOTIFY is found by re-reading after LINGER s, doubled
    # up to 1 s, and again LINGER s after each notification.
    step = _wake.LINGER
    async with _listening(target, done_channel(domain)) as conn:
        while True:
            record = await get_command_async(conn, domain, command_id)
            if record is None:
                # No log row: never sent, or not committed yet. Waiting would only
                # spend the whole timeout; say so at once.
                raise NotFoundError(
                    f"Unknown command {command_id} in domain `{domain}`: it was never "
                    "sent, or the transaction that sent it has not committed (commit "
                    "before waiting)"
                )
            if record.status in ends:
                return record
            if compat.monotonic() >= deadline:
                raise ReplyTimeout(
                    f"Command {command_id} in domain `{domain}` did not end within "
                    f"{timeout:g} s (status {record.status})"
                )
            woken = await _pause(conn, deadline, step)
            step = _wake.LINGER if woken else min(step * 2, 1.0)


async def batch_status_async(
    conn: psycopg.AsyncConnection[Any], batch_id: uuid.UUID
) -> BatchStatus | None:
    """The batch's progress, or None for an unknown batch_id."""
    async with conn.cursor(row_factory=class_row(BatchStatus)) as cur:
        await cur.execute(query("batch_status"), (batch_id,))
        return await cur.fetchone()


async def wait_batch_async(
    target: AsyncWaitTarget,
    batch_id: uuid.UUID,
    *,
    timeout: float = 60.0,
) -> BatchStatus:
    """Wait until every command of the batch has ended; raises `cbus.ReplyTimeout`."""
    deadline = compat.monotonic() + timeout
    async with _listening(target, BATCH_CHANNEL) as conn:
        while True:
            status = await batch_status_async(conn, batch_id)
            if status is None:
                raise LookupError(f"No batch {batch_id}")
            if status.done:
                return status
            if compat.monotonic() >= deadline:
                raise ReplyTimeout(f"Batch {batch_id} did not complete within {timeout:g} s")
            await _pause(conn, deadline)


async def trace_async(
    conn: psycopg.AsyncConnection[Any], correlation_id: uuid.UUID
) -> list[CommandRecord]:
    """Every command of a workflow (one correlation_id), in the order they were sent."""
    async with conn.cursor(row_factory=class_row(CommandRecord)) as cur:
        await cur.execute(query("command_trace"), (correlation_id,))
        return await cur.fetchall()
