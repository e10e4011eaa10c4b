"""The handler's connection: it opens the handler's savepoint before its first statement.

It also refuses what would break the command's outcome: statements from another
thread or after the handler returned, or past its `timeout`, and a handler's own
commit or rollback.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import pq

from ._acompat import aexecute_bare, current_caller
from ._queries import query
from .errors import PermanentError

__all__ = [
    "IDLE",
    "INTRANS",
    "HandlerConnection",
    "HandlerCursor",
    "HandlerServerCursor",
    "before_statement",
]

_SAVEPOINT = query("handler_savepoint")
_BEGIN_SAVEPOINT = query("handler_begin_savepoint")
_BEGIN = query("tx_begin")
IDLE = pq.TransactionStatus.IDLE
INTRANS = pq.TransactionStatus.INTRANS


async def before_statement(conn: Any) -> None:
    """Open the running handler's transaction or savepoint before its first statement."""
    if not isinstance(conn, HandlerConnection):
        return
    conn.check_caller()
    opener = conn.claim_savepoint()
    if opener is not None:
        await aexecute_bare(conn, opener)


class HandlerCursor(psycopg.AsyncCursor[Any]):
    """Opens the handler's savepoint just before its first statement."""

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        await before_statement(self.connection)
        return await super().execute(query, params, **kwargs)

    async def executemany(self, *args: Any, **kwargs: Any) -> Any:
        await before_statement(self.connection)
        return await super().executemany(*args, **kwargs)

    @contextlib.asynccontextmanager
    async def copy(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        await before_statement(self.connection)
        async with super().copy(*args, **kwargs) as copy:
            yield copy

    async def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        await before_statement(self.connection)
        async for row in super().stream(*args, **kwargs):  # noqa: RUF100, UP028 (sync twin)
            yield row


class HandlerServerCursor(psycopg.AsyncServerCursor[Any]):
    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        await before_statement(self.connection)
        return await super().execute(*args, **kwargs)


class HandlerConnection(psycopg.AsyncConnection[Any]):
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
        idle = self.pgconn.transaction_status == IDLE
        self.began = self.began or idle
        if not self.use_savepoints:
            return _BEGIN if idle else None
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
        await before_statement(self)
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
