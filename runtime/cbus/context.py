"""What a handler gets beside its command."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

__all__ = ["AsyncContext", "Context"]


@dataclass(slots=True, kw_only=True)
class _ContextBase:
    command_id: uuid.UUID
    correlation_id: uuid.UUID
    attempt: int
    max_attempts: int
    kind: str
    domain: str
    batch_id: uuid.UUID | None = None
    # Set by the worker once the command's `timeout` has passed: the attempt has
    # failed, and ctx.conn refuses statements. A sync handler should return.
    timed_out: bool = False


@dataclass(slots=True, kw_only=True)
class Context(_ContextBase):
    """A handler's view of its delivery.

    `conn` is the connection of the transaction in which the worker acknowledges the
    message: what a handler writes through it commits if and only if the command
    completes, so a redelivered command never applies its database effects twice.
    """

    conn: psycopg.Connection[Any]
    # Set by the worker: renews this delivery's lease at once, on its own connection.
    # None outside a worker (a handler's unit test), where there is no lease to hold.
    lease_extender: Callable[[float], None] | None = field(default=None, repr=False)

    def extend_lease(self, seconds: float) -> None:
        """Hold the message for at least `seconds` from now, at once.

        The worker's heartbeat renews leases on its own; ask for more before a step
        that may outlast the visibility timeout, so the message stays held (and,
        after a crash, is redelivered no sooner) for that long.
        """
        if self.lease_extender is not None:
            self.lease_extender(seconds)


@dataclass(slots=True, kw_only=True)
class AsyncContext(_ContextBase):
    """The async twin of `Context`, for handlers of an asyncio worker."""

    conn: psycopg.AsyncConnection[Any]
    lease_extender: Callable[[float], Awaitable[None]] | None = field(default=None, repr=False)

    async def extend_lease(self, seconds: float) -> None:
        """Hold the message for at least `seconds` from now, at once (see `Context`).

        Call it before blocking the event loop: the heartbeat runs on that loop.
        """
        if self.lease_extender is not None:
            await self.lease_extender(seconds)
