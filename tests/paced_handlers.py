"""Handlers for the `paced` domain (tests/schemas/paced.yaml), for worker processes too.

Every start is recorded in the table `starts` (created by the test) with the server's
clock_timestamp(), in the handler's transaction:

    cbus worker tests.paced_handlers:make_paced --dsn ...
"""

from __future__ import annotations

import cbus
from tbpkg import paced

_RECORD = "INSERT INTO starts (kind, key, at, command_id) VALUES (%s, %s, clock_timestamp(), %s)"


class PacedHandlers(paced.PacedHandlers):
    def tick(self, cmd: paced.Tick, ctx: cbus.Context) -> None:
        ctx.conn.execute(_RECORD, ("Tick", None, ctx.command_id))

    def keyed(self, cmd: paced.Keyed, ctx: cbus.Context) -> None:
        ctx.conn.execute(_RECORD, ("Keyed", cmd.account, ctx.command_id))

    def free(self, cmd: paced.Free, ctx: cbus.Context) -> None:
        ctx.conn.execute(_RECORD, ("Free", None, ctx.command_id))

    def beat(self, cmd: paced.Beat, ctx: cbus.Context) -> None:
        ctx.conn.execute(_RECORD, ("Beat", cmd.scheduled_at.isoformat(), ctx.command_id))


def make_paced() -> list[object]:
    return [PacedHandlers()]
