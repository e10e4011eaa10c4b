"""What a handler gets beside its command."""

from __future__ import annotations

import uuid
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
    extend_lease: Any = field(default=None, repr=False)


@dataclass(slots=True, kw_only=True)
class Context(_ContextBase):
    """A handler's view of its delivery.

    `conn` is the connection of the transaction in which the worker acknowledges the
    message: what a handler writes through it commits if and only if the command
    completes, so a redelivered command never applies its database effects twice.
    """

    conn: psycopg.Connection[Any]


@dataclass(slots=True, kw_only=True)
class AsyncContext(_ContextBase):
    """The async twin of `Context`, for handlers of an asyncio worker."""

    conn: psycopg.AsyncConnection[Any]
