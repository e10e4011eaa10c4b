"""A database holding commands in every status, for `cbus stats` and console tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import cbus
import psycopg
from cbus import troubleshooting as tsq

from .helpers import drain

QUEUE = "testbus__commands"


@dataclass
class Mixed:
    """What `populate` made, by what it should show as."""

    due: list[uuid.UUID] = field(default_factory=list)
    delayed: list[uuid.UUID] = field(default_factory=list)
    in_flight: list[uuid.UUID] = field(default_factory=list)
    backing_off: list[uuid.UUID] = field(default_factory=list)
    completed: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    tsq_rejected: list[uuid.UUID] = field(default_factory=list)
    tsq_broken: list[uuid.UUID] = field(default_factory=list)
    canceled: list[uuid.UUID] = field(default_factory=list)
    old_completed: list[uuid.UUID] = field(default_factory=list)


def handlers(testbus: ModuleType) -> Any:
    """Echo fails permanently (BROKEN) unless its text is `ok`; Reject does as told."""

    class Handlers(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            if cmd.text != "ok":
                raise cbus.PermanentError("BROKEN", f"n={cmd.n} is broken today")
            return testbus.EchoResult(n=cmd.n, text=cmd.text)

        def reject(self, cmd: Any, ctx: cbus.Context) -> None:
            if cmd.mode == "permanent":
                raise cbus.PermanentError("CANNOT", "never")
            raise testbus.RejectError.rejected("no thanks")

        def flaky(self, cmd: Any, ctx: cbus.Context) -> None:
            if ctx.attempt < cmd.succeed_on:
                raise cbus.TransientError(f"not yet (attempt {ctx.attempt})")

    return Handlers()


def populate(dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType) -> Mixed:
    m = Mixed()
    m.completed = [testbus.send_flaky(conn, succeed_on=1).command_id for _ in range(3)]
    m.old_completed = [testbus.send_flaky(conn, succeed_on=1).command_id]
    m.failed = [testbus.send_reject(conn, mode="declared").command_id for _ in range(2)]
    m.tsq_rejected = [testbus.send_reject(conn, mode="permanent").command_id for _ in range(3)]
    m.tsq_broken = [testbus.send_echo(conn, n=i).command_id for i in range(2)]
    conn.commit()
    drain(dsn, [handlers(testbus)])
    with psycopg.connect(dsn, autocommit=True) as ac:
        victim = m.tsq_rejected.pop()
        tsq.cancel(ac, "testbus", victim, operator="setup", reason="populate")
        m.canceled = [victim]
        # Ended two hours ago: outside both windows of the stats.
        ac.execute(
            "UPDATE cbus.command SET finished_at = now() - interval '2 hours'"
            " WHERE domain = 'testbus' AND command_id = %s",
            (m.old_completed[0],),
        )
    # Messages left in the queue: due, delayed, leased, and one backing off.
    queued = [testbus.send_echo(conn, n=100 + i, text="ok").command_id for i in range(4)]
    m.delayed = [testbus.send_echo(conn, n=200, text="ok", delay=3600).command_id]
    conn.commit()
    leased = conn.execute(
        "SELECT (headers ->> 'command_id')::uuid FROM pgmq.read(%s, 3600, 2)", (QUEUE,)
    ).fetchall()
    conn.commit()
    m.in_flight = [leased[0][0]]
    # What the worker's retry_later leaves: the failed attempt counted in the log.
    m.backing_off = [leased[1][0]]
    conn.execute(
        "UPDATE cbus.command SET attempts = 1, last_error_type = 'TransientError'"
        " WHERE domain = 'testbus' AND command_id = %s",
        (m.backing_off[0],),
    )
    conn.commit()
    m.due = [c for c in queued if c not in (m.in_flight[0], m.backing_off[0])]
    return m
