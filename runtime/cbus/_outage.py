"""What a worker says about its server: why it cannot start, and when it goes away.

A server that does not answer at start is waited for a few seconds (it may be
restarting), said once, then reported as a mistake (host, port and what to check).
Once the worker runs, every consumer, the listener and the
heartbeat reconnect on their own; the outage they all see is logged once, with the
retry interval, and once more when the server answers again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

__all__ = ["RETRY_MAX", "START_WAIT", "Outage", "server_of", "unreachable_message"]

RETRY_MAX = 5.0
"""The longest a consumer waits between two attempts to reconnect (seconds)."""

START_WAIT = 10.0
"""How long a worker that starts waits for a server that does not answer (seconds)."""

log = logging.getLogger("cbus.worker")


def server_of(dsn: str, connect_kwargs: dict[str, Any]) -> str:
    """`host:port` as libpq will try it, from the DSN, the kwargs and PGHOST/PGPORT."""
    try:
        params: dict[str, Any] = {**conninfo_to_dict(dsn), **connect_kwargs}
    except psycopg.ProgrammingError:
        params = dict(connect_kwargs)
    host = str(params.get("host") or os.environ.get("PGHOST") or "the local socket")
    port = str(params.get("port") or os.environ.get("PGPORT") or 5432)
    return f"{host}:{port}"


def _reason(exc: BaseException) -> str:
    """libpq's reason, without its `connection to server ... failed:` preamble."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else type(exc).__name__
    return first.rpartition(" failed: ")[2].strip() or first


def waiting_for(where: str, exc: BaseException, seconds: float) -> None:
    """Said once at start, while the first connection is tried again."""
    log.warning(
        "no PostgreSQL at %s (%s): trying again for %g s before giving up",
        where,
        _reason(exc),
        seconds,
        extra={"action": "server_waited_for"},
    )


def unreachable_message(where: str, exc: BaseException) -> str:
    return (
        f"Cannot connect to PostgreSQL at {where}: {_reason(exc)}. Check that the server "
        "is running and accepts connections there, and the host and port of the DSN "
        "(or PGHOST/PGPORT)"
    )


class Outage:
    """Shared by a worker's consumers, listener and heartbeat: one line per outage."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._lock = threading.Lock()
        self._since: float | None = None

    @property
    def down(self) -> bool:
        return self._since is not None

    def lost(self, exc: BaseException) -> None:
        """A connection failed or dropped; said once until the server answers again."""
        with self._lock:
            first = self._since is None
            if first:
                self._since = time.monotonic()
        if first:
            log.warning(
                "lost PostgreSQL at %s (%s): reconnecting, every %g s at most, until it answers",
                self.where,
                _reason(exc),
                RETRY_MAX,
                extra={"action": "server_lost"},
            )
        else:
            log.debug("still no PostgreSQL at %s: %s", self.where, _reason(exc))

    def back(self, tried_at: float | None = None) -> None:
        """A connection was made; said once per outage.

        `tried_at` is when that connection was begun (`time.monotonic()`): one begun
        before the outage was seen proves nothing about the server now, and is not
        taken for its return."""
        if self._since is None:
            return
        with self._lock:
            if tried_at is not None and self._since is not None and tried_at < self._since:
                return
            since, self._since = self._since, None
        if since is not None:
            log.info(
                "PostgreSQL at %s answers again, after %.1f s",
                self.where,
                time.monotonic() - since,
                extra={"action": "server_back"},
            )
