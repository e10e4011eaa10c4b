"""Wake-ups that do not serialise commits: one NOTIFY per channel every few ms per process.

A transaction that NOTIFYs takes, at commit, a lock that serialises every other
notifying commit of the server (PostgreSQL's `PreCommit_Notify`), so a NOTIFY in
every send made concurrent senders wait on each other (ADR 0010). Here a process
asks `due(conn, channel)` before each send (and the worker before each
acknowledgement): True when it has not notified that channel of that database in
the last `WINDOW` seconds, and the statement then carries its `pg_notify`; else the
statement runs without one.

What a statement without NOTIFY relies on: the worker that the last notification
woke keeps polling for a while after it found work (`LINGER`, doubling up to its
`poll_interval`), and a waiter re-reads the log on the same steps. A notification
rolled back with its transaction leaves the sends that rode on it to the worker's
next poll. Leaf module: it imports nothing from cbus.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

__all__ = ["LINGER", "WINDOW", "due"]

WINDOW = 0.005
"""Seconds during which a process sends no second NOTIFY on a channel."""

LINGER = 0.005
"""A worker's first re-poll after work, and a waiter's first re-read; doubled after each."""

_last: dict[tuple[Any, ...], dict[str, float]] = {}
"""When this process last notified each channel, per (host, port, database)."""

_by_conn: dict[int, tuple[weakref.ref[Any], dict[str, float]]] = {}
"""Each connection's entry of `_last`, by id(): reading host, port and database from
libpq on every send cost more than the rest of `due` (every sending thread waits on
this one's Python, ADR 0010). The weak reference tells a reused id from its conn."""


def _channels(conn: Any) -> dict[str, float]:
    found = _by_conn.get(id(conn))
    if found is not None and found[0]() is conn:
        return found[1]
    pg = conn.pgconn
    channels = _last.setdefault((pg.host, pg.port, pg.db), {})
    if len(_by_conn) >= 1024:  # connections come and go: forget the gone ones
        _by_conn.clear()
    _by_conn[id(conn)] = (weakref.ref(conn), channels)
    return channels


def due(conn: Any, channel: str) -> bool:
    """Whether this statement on `conn` should notify `channel` (and count as notified).

    Keyed by the connection's server and database, so two databases on one process
    do not share a window. Without a lock: two threads that both find the window
    over both notify, which is only a spare notification.
    """
    channels = _channels(conn)
    now = time.monotonic()
    last = channels.get(channel)
    if last is not None and now - last < WINDOW:
        return False
    channels[channel] = now
    return True
