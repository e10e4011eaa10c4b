"""Sender targets of contract section 12: pools, SQLAlchemy sessions and connections.

For each target, a send that rolls back leaves nothing, and one that commits is
handled by a real worker. Waiting works from the same targets. Django's connection
has its own file (Django's settings are global to a process).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from .helpers import queue_depth, running

sa = pytest.importorskip("sqlalchemy")
sa_orm = pytest.importorskip("sqlalchemy.orm")
sa_async = pytest.importorskip("sqlalchemy.ext.asyncio")


def sa_url(dsn: str, driver: str = "psycopg") -> Any:
    info = conninfo_to_dict(dsn)
    return sa.URL.create(
        f"postgresql+{driver}",
        username=info.get("user"),
        password=info.get("password"),
        host=info.get("host"),
        port=int(info["port"]) if info.get("port") else None,
        database=info.get("dbname"),
    )


@pytest.fixture
def engine(dsn: str) -> Iterator[Any]:
    engine = sa.create_engine(sa_url(dsn))
    yield engine
    engine.dispose()


def handled(dsn: str, testbus: ModuleType) -> list[int]:
    """Run a worker until idle; the `n` of every Echo it handled."""
    seen: list[int] = []

    class Handlers(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            seen.append(cmd.n)
            return testbus.EchoResult(n=cmd.n, text=cmd.text)

    cbus.Worker(dsn, [Handlers()], poll_interval=0.05).run(until_idle=True)
    return sorted(seen)


def orders(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM orders").fetchone()
    assert row is not None
    return int(row[0])


def test_pool_sends_and_commits_on_a_pooled_connection(dsn: str, testbus: ModuleType) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=1) as pool, psycopg.connect(dsn) as other:
        one = testbus.send_echo(pool, n=1)
        # Committed at once: another connection sees it.
        assert cbus.get_command(other, "testbus", one.command_id) is not None
        taken = uuid.uuid4()
        cbus.send_many(pool, [testbus.Echo(n=2)], command_ids=[taken])
        with pytest.raises(cbus.DuplicateCommandError):
            cbus.send_many(
                pool, [testbus.Echo(n=3), testbus.Echo(n=4)], command_ids=[uuid.uuid4(), taken]
            )
        # The failed group rolled back on its pooled connection, which is usable again.
        with pool.connection() as conn:
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert queue_depth(other, "testbus__commands") == 2
    assert handled(dsn, testbus) == [1, 2]


def test_async_pool_sends_and_commits(dsn: str, testbus: ModuleType) -> None:
    async def main() -> None:
        async with AsyncConnectionPool(dsn, min_size=1, max_size=1) as pool:
            await testbus.send_echo_async(pool, n=1)
            taken = uuid.uuid4()
            await cbus.send_many_async(pool, [testbus.Echo(n=2)], command_ids=[taken])
            with pytest.raises(cbus.DuplicateCommandError):
                await cbus.send_many_async(
                    pool, [testbus.Echo(n=3), testbus.Echo(n=4)], command_ids=[uuid.uuid4(), taken]
                )

    asyncio.run(main())
    assert handled(dsn, testbus) == [1, 2]


def test_session_joins_its_transaction(dsn: str, engine: Any, testbus: ModuleType) -> None:
    insert = sa.text("INSERT INTO orders VALUES (:id, 'c1')")
    with sa_orm.Session(engine) as session:
        session.execute(insert, {"id": uuid.uuid4()})
        rolled = testbus.send_echo(session, n=1)
        cbus.send_many(session, [testbus.Echo(n=2)])
        session.rollback()
        # No transaction begun: the send begins the one that commit() commits.
        assert not session.in_transaction()
        sent = testbus.send_echo(session, n=3)
        session.execute(insert, {"id": uuid.uuid4()})
        session.commit()
    with psycopg.connect(dsn) as conn:
        assert cbus.get_command(conn, "testbus", rolled.command_id) is None
        assert cbus.get_command(conn, "testbus", sent.command_id) is not None
        assert orders(conn) == 1
        assert queue_depth(conn, "testbus__commands") == 1
    assert handled(dsn, testbus) == [3]


def test_connection_joins_its_transaction_and_autobegins(
    dsn: str, engine: Any, testbus: ModuleType
) -> None:
    with engine.connect() as conn:
        testbus.send_echo(conn, n=1)
        conn.rollback()
        testbus.send_echo(conn, n=2)  # autobegins: commit() below commits it
        assert conn.in_transaction()
        conn.commit()
        with conn.begin():
            testbus.send_echo(conn, n=3)
    with engine.begin() as conn:
        cbus.send_many(conn, [testbus.Echo(n=4), testbus.Echo(n=5)])
    assert handled(dsn, testbus) == [2, 3, 4, 5]


def test_async_session_and_connection_join_their_transactions(
    dsn: str, testbus: ModuleType
) -> None:
    async def main() -> None:
        engine = sa_async.create_async_engine(sa_url(dsn))
        try:
            async with sa_async.AsyncSession(engine) as session:
                await testbus.send_echo_async(session, n=1)
                await session.rollback()
                await testbus.send_echo_async(session, n=2)
                await cbus.send_many_async(session, [testbus.Echo(n=3)])
                await session.commit()
            async with engine.connect() as conn:
                await testbus.send_echo_async(conn, n=4)
                await conn.rollback()
                await testbus.send_echo_async(conn, n=5)
                await conn.commit()
        finally:
            await engine.dispose()

    asyncio.run(main())
    assert handled(dsn, testbus) == [2, 3, 5]


def test_wait_works_from_pools_and_sessions(dsn: str, engine: Any, testbus: ModuleType) -> None:
    class Handlers(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            return testbus.EchoResult(n=cmd.n, text=cmd.text)

    expected = testbus.EchoResult(n=1, text="")
    with running(dsn, [Handlers()]):
        with sa_orm.Session(engine) as session:
            sent = testbus.send_echo(session, n=1)
            session.commit()
            assert testbus.wait_echo(session, sent.command_id, timeout=20) == expected
            # An open transaction on the session does not keep the wait from its news.
            session.execute(sa.text("SELECT 1"))
            assert testbus.wait_echo(session, sent.command_id, timeout=20) == expected
        with engine.connect() as conn:
            assert testbus.wait_echo(conn, sent.command_id, timeout=20) == expected
        with ConnectionPool(dsn, min_size=1, max_size=1) as pool:
            assert testbus.wait_echo(pool, sent.command_id, timeout=20) == expected
            with pool.connection() as lent:
                assert not lent.autocommit  # the wait gave it back as it was

        async def main() -> None:
            aengine = sa_async.create_async_engine(sa_url(dsn))
            try:
                async with sa_async.AsyncSession(aengine) as asession:
                    asent = await testbus.send_echo_async(asession, n=1)
                    await asession.commit()
                    got = await testbus.wait_echo_async(asession, asent.command_id, timeout=20)
                    assert got == expected
                async with aengine.connect() as aconn:
                    got = await testbus.wait_echo_async(aconn, asent.command_id, timeout=20)
                    assert got == expected
            finally:
                await aengine.dispose()
            async with AsyncConnectionPool(dsn, min_size=1, max_size=1) as apool:
                assert await testbus.wait_echo_async(apool, sent.command_id, timeout=20) == expected

        asyncio.run(main())


ACCEPTED_SYNC = "target must be a psycopg.Connection, a psycopg_pool.ConnectionPool, a cbus.Bus"


@pytest.mark.parametrize(
    ("make", "hint"),
    [
        (lambda dsn, conn: dsn, "got str: a DSN is not a target, send through cbus.Bus(dsn)"),
        (lambda dsn, conn: None, "got NoneType"),
        (lambda dsn, conn: conn.cursor(), "pass the cursor's connection (cur.connection)"),
        (lambda dsn, conn: object(), "got builtins.object"),
    ],
)
def test_wrong_target_is_a_type_error_before_any_sql(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, make: Any, hint: str
) -> None:
    target = make(dsn, conn)
    for send in (
        lambda: testbus.send_echo(target, n=1),
        lambda: cbus.send_many(target, [testbus.Echo(n=1)]),
        lambda: cbus.send_many(target, []),
        lambda: testbus.wait_echo(target, uuid.uuid4(), timeout=1),
    ):
        with pytest.raises(TypeError) as info:
            send()
        assert str(info.value).startswith(ACCEPTED_SYNC)
        assert "SQLAlchemy Session or Connection on the psycopg driver" in str(info.value)
        assert hint in str(info.value)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_wrong_async_target_is_a_type_error(dsn: str, engine: Any, testbus: ModuleType) -> None:
    async def main() -> None:
        with engine.connect() as sync_conn, pytest.raises(TypeError, match="it is synchronous"):
            await testbus.send_echo_async(sync_conn, n=1)
        async with await psycopg.AsyncConnection.connect(dsn) as aconn:
            with pytest.raises(TypeError, match="it is asynchronous, call the `_async` sender"):
                testbus.send_echo(aconn, n=1)
        with pytest.raises(TypeError, match=r"target must be a psycopg\.AsyncConnection"):
            await testbus.send_echo_async(dsn, n=1)
        pool = ConnectionPool(dsn, min_size=1, max_size=1, open=False)
        with pytest.raises(TypeError, match="it is synchronous"):
            await testbus.wait_echo_async(pool, uuid.uuid4(), timeout=1)

    asyncio.run(main())


def test_engine_and_other_drivers_are_refused_with_the_fix(
    dsn: str, engine: Any, testbus: ModuleType
) -> None:
    with pytest.raises(TypeError, match=r"an Engine holds no transaction, pass a Session"):
        testbus.send_echo(engine, n=1)
    sqlite = sa.create_engine("sqlite://")
    with sa_orm.Session(sqlite) as session, pytest.raises(TypeError) as info:
        testbus.send_echo(session, n=1)
    assert str(info.value) == (
        "The SQLAlchemy engine uses the `sqlite+pysqlite` driver; cbus sends on psycopg 3: "
        "create the engine with a `postgresql+psycopg://` URL"
    )
    sqlite.dispose()


def test_wait_names_its_own_targets(conn: psycopg.Connection[Any], testbus: ModuleType) -> None:
    """A handler's context sends, but never waits (its command would hold the wait up)."""
    ctx = cbus.Context(
        command_id=uuid.uuid4(),
        correlation_id=uuid.uuid4(),
        attempt=1,
        max_attempts=3,
        kind="testbus.Echo",
        domain="testbus",
        conn=conn,
    )
    with pytest.raises(TypeError) as info:
        testbus.wait_echo(ctx, uuid.uuid4(), timeout=1)  # type: ignore[arg-type]
    assert str(info.value).startswith(
        "target must be a psycopg.Connection, a psycopg_pool.ConnectionPool, a cbus.Bus, a "
        "SQLAlchemy Session"
    )
