"""Handlers for the ordering tests' `cbus worker` processes (tests/runtime/test_ordering.py).

    cbus worker tests.ordering_handlers:make_ordered --dsn ...

Each attempt of `Step` reads the server's clock before and after its sleep, so that
every process's intervals compare on one clock; a completed attempt records them in
`steps` in its own transaction, a failed one (rolled back) through a connection of
the process's own, so failed attempts are checked for overlap as well.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import cbus
import psycopg
from tbpkg import ordered

STEPS = """
CREATE TABLE IF NOT EXISTS public.steps (
    key text NOT NULL, seq int NOT NULL, attempt int NOT NULL, ok bool NOT NULL,
    pid int NOT NULL, started timestamptz NOT NULL, ended timestamptz NOT NULL)
"""


class Transient(Exception):
    """A failure worth a retry."""


class OrderedHandlers(ordered.OrderedHandlers):
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._side: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def _record_failure(self, row: tuple[Any, ...]) -> None:
        with self._lock:
            if self._side is None:
                self._side = psycopg.connect(self._dsn, autocommit=True)
            self._side.execute(
                "INSERT INTO steps VALUES (%s, %s, %s, false, pg_backend_pid(), %s, %s)", row
            )

    def step(self, cmd: ordered.Step, ctx: cbus.Context) -> None:
        cur = ctx.conn.execute("SELECT clock_timestamp()")
        started = cur.fetchone()[0]  # type: ignore[index]
        time.sleep(cmd.sleep_ms / 1000)
        ended = ctx.conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        if random.random() < cmd.fail_rate:
            self._record_failure((cmd.key, cmd.seq, ctx.attempt, started, ended))
            raise Transient(f"{cmd.key}#{cmd.seq} failed on attempt {ctx.attempt}")
        ctx.conn.execute(
            "INSERT INTO steps VALUES (%s, %s, %s, true, pg_backend_pid(), %s, %s)",
            (cmd.key, cmd.seq, ctx.attempt, started, ended),
        )

    def stop(self, cmd: ordered.Stop, ctx: cbus.Context) -> None:
        raise cbus.PermanentError(f"{cmd.key}#{cmd.seq} needs an operator")


def make_ordered() -> OrderedHandlers:
    import os

    return OrderedHandlers(os.environ["CBUS_ORDERING_DSN"])
