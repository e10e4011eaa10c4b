"""cbus on a caller's connection whose `row_factory` is not psycopg's default.

A service often opens its connections with `row_factory=dict_row` (or namedtuple,
or a class); every cbus call that takes such a connection must work on it, and a
send must not report failure for a command it has in fact recorded and enqueued.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest
from psycopg.rows import dict_row, namedtuple_row, scalar_row

from .helpers import drain, queue_depth

FACTORIES: dict[str, Callable[..., Any]] = {
    "dict_row": dict_row,
    "namedtuple_row": namedtuple_row,
    "scalar_row": scalar_row,
}


class Echoes:
    @staticmethod
    def make(testbus: ModuleType) -> Any:
        class Handlers(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
            def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
                return testbus.EchoResult(n=cmd.n, text=cmd.text)

        return Handlers()


@pytest.mark.parametrize("factory", sorted(FACTORIES))
def test_every_call_on_a_connection_with_its_own_row_factory(
    dsn: str, testbus: ModuleType, factory: str
) -> None:
    with psycopg.connect(dsn, row_factory=FACTORIES[factory]) as conn:
        cbus.install(conn)
        sent = testbus.send_echo(conn, n=1)
        many = cbus.send_many(
            conn, [testbus.Echo(n=2), testbus.Echo(n=3)], batch_id=(batch := uuid.uuid4())
        )
        conn.commit()
        conn.autocommit = True  # waiting needs it (a notification arrives between transactions)
        assert isinstance(sent.msg_id, int) and sent.msg_id > 0
        assert [r.msg_id for r in many] == sorted(r.msg_id for r in many)
        with psycopg.connect(dsn) as plain:
            assert queue_depth(plain, "testbus__commands") == 3

        drain(dsn, [Echoes.make(testbus)])

        record = cbus.get_command(conn, "testbus", sent.command_id)
        assert record is not None and record.status == "COMPLETED"
        assert cbus.result_of(record, testbus.EchoResult).n == 1
        done = cbus.wait_for(conn, "testbus", sent.command_id, timeout=5)
        assert done.status == "COMPLETED"
        status = cbus.wait_batch(conn, batch, timeout=5)
        assert status.completed == 2
        assert cbus.batch_status(conn, batch) == status
        assert [r.command_id for r in cbus.trace(conn, sent.correlation_id)] == [sent.command_id]
        assert cbus.list_troubleshooting(conn).items == []
        assert cbus.show_command(conn, "testbus", sent.command_id).record.status == "COMPLETED"
        assert cbus.get_audit(conn, "testbus", sent.command_id) is not None


@pytest.mark.parametrize("factory", sorted(FACTORIES))
def test_every_async_call_on_a_connection_with_its_own_row_factory(
    dsn: str, testbus: ModuleType, factory: str
) -> None:
    async def main() -> None:
        conn = await psycopg.AsyncConnection.connect(dsn, row_factory=FACTORIES[factory])
        async with conn:
            await cbus.install_async(conn)
            sent = await testbus.send_echo_async(conn, n=1)
            many = await cbus.send_many_async(conn, [testbus.Echo(n=2)], batch_id=uuid.uuid4())
            await conn.commit()
            await conn.set_autocommit(True)
            assert sent.msg_id > 0 and many[0].msg_id > sent.msg_id
            drain(dsn, [Echoes.make(testbus)])
            record = await cbus.get_command_async(conn, "testbus", sent.command_id)
            assert record is not None and record.status == "COMPLETED"
            done = await cbus.wait_for_async(conn, "testbus", sent.command_id, timeout=5)
            assert done.status == "COMPLETED"
            assert (await cbus.batch_status_async(conn, many[0].correlation_id)) is None
            traced = await cbus.trace_async(conn, sent.correlation_id)
            assert [r.command_id for r in traced] == [sent.command_id]
            assert (await cbus.list_troubleshooting_async(conn)).items == []
            detail = await cbus.show_command_async(conn, "testbus", sent.command_id)
            assert detail.record.status == "COMPLETED"
            assert await cbus.get_audit_async(conn, "testbus", sent.command_id) is not None

    asyncio.run(main())
