"""The cursor a send runs its statement on: tuple rows, whatever the caller's row_factory.

`send_cursor(conn)` keeps one cursor per thread, for the last connection the thread
sent on, and hands it out again while the thread sends on that connection. A
cursor made per send (what `conn.execute` does) costs its adapters map and its
Transformer, and psycopg's cursor reuses its Transformer and dumpers when it runs
the same statement again (2.9 us and 4 us of Python per send, out of the GIL that
every sending thread waits for; ADR 0010). A thread
sends one statement at a time and reads its row before its next send, so a cursor
is never used by two sends at once; other threads keep cursors of their own on the
same connection, as with `conn.execute`, whose lock serialises them.

The thread keeps its last connection alive until it sends on another: one closed
connection object per thread at most. `send_cursor_async` makes a cursor per send:
tasks share a thread, and another task could run its statement on a kept cursor
between this one's execute and its fetch. Leaf module: it imports nothing from cbus.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg.rows import TupleRow, tuple_row

__all__ = ["send_cursor", "send_cursor_async"]

_local = threading.local()


def send_cursor(conn: psycopg.Connection[Any]) -> psycopg.Cursor[TupleRow]:
    """This thread's tuple-row cursor on `conn`, made on its first send there."""
    kept = getattr(_local, "kept", None)
    if kept is not None and kept[0] is conn:
        cur: psycopg.Cursor[TupleRow] = kept[1]
        if not cur.closed:
            return cur
    cur = conn.cursor(row_factory=tuple_row)
    _local.kept = (conn, cur)
    return cur


def send_cursor_async(conn: psycopg.AsyncConnection[Any]) -> psycopg.AsyncCursor[TupleRow]:
    """A new tuple-row cursor on `conn` (see the module's docstring for why not kept)."""
    return conn.cursor(row_factory=tuple_row)
