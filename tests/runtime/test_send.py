"""Sending: the command joins the caller's transaction, is recorded, and is sent once."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import uuid
from types import ModuleType
from typing import Any

import cbus
import msgspec
import psycopg
import pytest

from .helpers import drain, queue_depth, statuses


class Recorder:
    """Builds a handler class that records what it receives."""

    @staticmethod
    def make(testbus: ModuleType) -> Any:
        class Handlers(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                self.seen: list[tuple[Any, cbus.Context]] = []

            def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
                self.seen.append((cmd, ctx))
                return testbus.EchoResult(n=cmd.n, text=cmd.text)

        return Handlers()


def test_rollback_enqueues_nothing(conn: psycopg.Connection[Any], testbus: ModuleType) -> None:
    conn.execute("INSERT INTO orders VALUES (%s, 'c1')", (uuid.uuid4(),))
    result = testbus.send_echo(conn, n=1)
    conn.rollback()
    assert queue_depth(conn, "testbus__commands") == 0
    assert cbus.get_command(conn, "testbus", result.command_id) is None
    assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)


def test_commit_delivers_exactly_the_command_sent(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    order_id = uuid.uuid4()
    conn.execute("INSERT INTO orders VALUES (%s, 'c1')", (order_id,))
    sent = testbus.send_echo(conn, n=42, text="hello")
    conn.commit()
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None and record.status == "PENDING"

    handlers = Recorder.make(testbus)
    drain(dsn, [handlers])

    assert len(handlers.seen) == 1
    cmd, ctx = handlers.seen[0]
    assert type(cmd) is testbus.Echo
    assert cmd == testbus.Echo(n=42, text="hello")
    assert ctx.command_id == sent.command_id
    assert ctx.correlation_id == sent.correlation_id
    assert ctx.attempt == 1
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None
    assert record.status == "COMPLETED"
    assert record.attempts == 1
    assert record.result == {"n": 42, "text": "hello"}
    assert record.result_as(testbus.EchoResult) == testbus.EchoResult(n=42, text="hello")
    assert queue_depth(conn, "testbus__commands") == 0


def test_wire_format_is_the_documented_one(
    conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    corr = uuid.uuid4()
    sent = testbus.send_echo(conn, n=7, correlation_id=corr, reply_to="replies_here")
    conn.commit()
    message, headers = conn.execute(
        "SELECT message, headers FROM pgmq.q_testbus__commands WHERE msg_id = %s", (sent.msg_id,)
    ).fetchone()  # type: ignore[misc]
    assert message == {"n": 7, "text": ""}
    assert headers == {
        "kind": "testbus.Echo",
        "version": 1,
        "command_id": str(sent.command_id),
        "correlation_id": str(corr),
        "reply_to": "replies_here",
    }


def test_duplicate_command_id_raises_and_enqueues_nothing(
    conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    command_id = uuid.uuid4()
    testbus.send_echo(conn, n=1, command_id=command_id)
    conn.commit()
    with pytest.raises(cbus.DuplicateCommandError) as info:
        testbus.send_echo(conn, n=2, command_id=command_id)
    assert str(info.value) == f"Command {command_id} was already sent in domain `testbus`"
    # The caller's transaction is still usable: the duplicate did not abort it.
    conn.execute("INSERT INTO orders VALUES (%s, 'c2')", (uuid.uuid4(),))
    conn.commit()
    assert queue_depth(conn, "testbus__commands") == 1


def test_racing_duplicate_sends_raise_duplicate_not_unique_violation(
    dsn: str, testbus: ModuleType
) -> None:
    command_id = uuid.uuid4()
    first = psycopg.connect(dsn)
    second = psycopg.connect(dsn)
    try:
        testbus.send_echo(first, n=1, command_id=command_id)
        outcome: list[BaseException | None] = []

        def racer() -> None:
            try:
                testbus.send_echo(second, n=2, command_id=command_id)
                second.commit()
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=racer)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the second send should wait for the first transaction"
        first.commit()
        thread.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], cbus.DuplicateCommandError)
        assert queue_depth(first, "testbus__commands") == 1
    finally:
        first.close()
        second.close()


def test_racing_send_after_rollback_goes_through(dsn: str, testbus: ModuleType) -> None:
    command_id = uuid.uuid4()
    with psycopg.connect(dsn) as first, psycopg.connect(dsn) as second:
        testbus.send_echo(first, n=1, command_id=command_id)
        done: list[object] = []
        thread = threading.Thread(
            target=lambda: done.append(testbus.send_echo(second, n=2, command_id=command_id))
        )
        thread.start()
        thread.join(0.3)
        first.rollback()
        thread.join(10)
        second.commit()
        assert len(done) == 1
        assert queue_depth(first, "testbus__commands") == 1


def test_constraints_are_checked_before_anything_is_written(
    conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    with pytest.raises(cbus.ValidationError) as info:
        testbus.send_bounded(conn, qty=11, code="EUR")
    assert str(info.value) == "Invalid Bounded: Expected `int` <= 10 - at `$.qty`"
    with pytest.raises(cbus.ValidationError) as info:
        testbus.send_bounded(conn, qty=1, code="eur")
    assert "$.code" in str(info.value)
    conn.commit()
    assert queue_depth(conn, "testbus__commands") == 0
    assert conn.execute("SELECT count(*) FROM cbus.command").fetchone() == (0,)


def test_send_many_is_atomic(conn: psycopg.Connection[Any], testbus: ModuleType) -> None:
    results = cbus.send_many(conn, [testbus.Echo(n=i) for i in range(100)])
    conn.commit()
    assert len(results) == 100
    assert len({r.msg_id for r in results}) == 100
    assert queue_depth(conn, "testbus__commands") == 100

    taken = results[50].command_id
    fresh = [uuid.uuid4() for _ in range(3)]
    with pytest.raises(cbus.DuplicateCommandError) as info:
        cbus.send_many(
            conn, [testbus.Echo(n=i) for i in range(4)], command_ids=[*fresh[:2], taken, fresh[2]]
        )
    assert info.value.command_id == taken
    conn.commit()
    assert queue_depth(conn, "testbus__commands") == 100
    for command_id in fresh:
        assert cbus.get_command(conn, "testbus", command_id) is None


def test_bus_sends_in_its_own_transaction(dsn: str, testbus: ModuleType) -> None:
    with cbus.Bus(dsn) as bus:
        sent = testbus.send_echo(bus, n=5)
        many = bus.send_many([testbus.Echo(n=6), testbus.Echo(n=7)])
    with psycopg.connect(dsn) as conn:
        assert queue_depth(conn, "testbus__commands") == 3
        assert cbus.get_command(conn, "testbus", sent.command_id) is not None
        assert all(cbus.get_command(conn, "testbus", r.command_id) for r in many)


def test_sends_that_start_together_open_a_new_bus_once(dsn: str, testbus: ModuleType) -> None:
    """Nobody opened the bus: the first sends, from threads or tasks at once, open it."""
    import threading

    bus = cbus.Bus(dsn)
    errors: list[BaseException] = []

    def send(n: int) -> None:
        try:
            testbus.send_echo(bus, n=n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bus.close()

    async def send_async() -> None:
        abus = cbus.AsyncBus(dsn)
        try:
            await asyncio.gather(*(testbus.send_echo_async(abus, n=n) for n in range(10, 20)))
        finally:
            await abus.close()

    asyncio.run(send_async())
    assert errors == []
    with psycopg.connect(dsn) as conn:
        assert queue_depth(conn, "testbus__commands") == 20


def test_async_senders(dsn: str, testbus: ModuleType) -> None:
    async def main() -> list[cbus.SendResult]:
        async with await psycopg.AsyncConnection.connect(dsn) as aconn:
            one = await testbus.send_echo_async(aconn, n=1)
            await aconn.rollback()
            two = await testbus.send_echo_async(aconn, n=2)
            await aconn.commit()
        async with cbus.AsyncBus(dsn) as bus:
            three = await testbus.send_echo_async(bus, n=3)
        return [one, two, three]

    one, two, three = asyncio.run(main())
    with psycopg.connect(dsn) as conn:
        assert cbus.get_command(conn, "testbus", one.command_id) is None
        assert cbus.get_command(conn, "testbus", two.command_id) is not None
        assert cbus.get_command(conn, "testbus", three.command_id) is not None
        assert queue_depth(conn, "testbus__commands") == 2


def test_delayed_command_waits_for_its_time(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    later = testbus.send_echo(conn, n=1, delay=3600)
    at = testbus.send_echo(conn, n=2, delay=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    now = testbus.send_echo(conn, n=3)
    conn.commit()
    handlers = Recorder.make(testbus)
    worker = cbus.Worker(dsn, [handlers], poll_interval=0.05)
    # until_idle returns: the delayed commands fall due in an hour, not within a minute.
    worker.run(until_idle=True)
    assert [cmd.n for cmd, _ in handlers.seen] == [3]
    assert statuses(conn, "testbus") == {"COMPLETED": 1, "PENDING": 2}
    assert cbus.get_command(conn, "testbus", later.command_id).status == "PENDING"  # type: ignore[union-attr]
    assert cbus.get_command(conn, "testbus", at.command_id).status == "PENDING"  # type: ignore[union-attr]
    assert cbus.get_command(conn, "testbus", now.command_id).status == "COMPLETED"  # type: ignore[union-attr]


def test_delay_refuses_naive_datetime(conn: psycopg.Connection[Any], testbus: ModuleType) -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        testbus.send_echo(conn, n=1, delay=dt.datetime.now())


@pytest.mark.parametrize("delay", [float("nan"), float("inf"), -float("inf"), 1e300])
def test_delay_refuses_a_non_finite_number(
    conn: psycopg.Connection[Any], testbus: ModuleType, delay: float
) -> None:
    with pytest.raises(ValueError, match="number of seconds up to"):
        testbus.send_echo(conn, n=1, delay=delay)


def test_ids_must_be_uuids(conn: psycopg.Connection[Any], testbus: ModuleType) -> None:
    text = str(uuid.uuid4())
    with pytest.raises(TypeError, match=r"command_id must be a uuid\.UUID, got str"):
        testbus.send_echo(conn, n=1, command_id=text)
    with pytest.raises(TypeError, match=r"correlation_id must be a uuid\.UUID, got str"):
        testbus.send_echo(conn, n=1, correlation_id=text)
    with pytest.raises(TypeError, match=r"command_ids\[\] must be a uuid\.UUID, got str"):
        cbus.send_many(conn, [testbus.Echo(n=1)], command_ids=[text])
    # Nothing was sent, and the caller's transaction is usable.
    assert conn.execute("SELECT count(*) FROM cbus.command").fetchone() == (0,)


def test_reply_to_must_be_a_queue_name(conn: psycopg.Connection[Any], testbus: ModuleType) -> None:
    with pytest.raises(ValueError, match="Invalid queue name"):
        testbus.send_echo(conn, n=1, reply_to="Robert'); DROP TABLE students;--")


def test_foreign_message_is_recorded_and_processed(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    command_id = uuid.uuid4()
    headers = {
        "kind": "testbus.Echo",
        "version": 1,
        "command_id": str(command_id),
        "correlation_id": str(uuid.uuid4()),
    }
    conn.execute(
        "SELECT pgmq.send('testbus__commands', %s::jsonb, %s::jsonb)",
        (msgspec.json.encode({"n": 9}).decode(), msgspec.json.encode(headers).decode()),
    )
    conn.commit()
    handlers = Recorder.make(testbus)
    drain(dsn, [handlers])
    assert [cmd for cmd, _ in handlers.seen] == [testbus.Echo(n=9)]
    record = cbus.get_command(conn, "testbus", command_id)
    assert record is not None and record.status == "COMPLETED" and record.max_attempts == 3

    # The same command_id again from a foreign client: recorded as done, not run again.
    conn.execute(
        "SELECT pgmq.send('testbus__commands', %s::jsonb, %s::jsonb)",
        (msgspec.json.encode({"n": 10}).decode(), msgspec.json.encode(headers).decode()),
    )
    conn.commit()
    drain(dsn, [handlers])
    assert len(handlers.seen) == 1
    assert queue_depth(conn, "testbus__commands") == 0
    events = [
        row[0]
        for row in conn.execute(
            "SELECT event FROM cbus.audit WHERE command_id = %s ORDER BY id", (command_id,)
        )
    ]
    assert events == ["duplicate_dropped"]


def test_sending_to_a_domain_without_its_queue_says_what_to_run(
    conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    conn.execute("SELECT pgmq.drop_queue('testbus__commands')")
    conn.commit()
    hint = "run `cbus db install --domains tbpkg`"
    with pytest.raises(cbus.InstallError, match="Cannot send to domain testbus: relation") as info:
        testbus.send_echo(conn, n=1)
    assert hint in str(info.value)
    conn.rollback()
    with pytest.raises(cbus.InstallError, match="Cannot send to domain testbus") as info:
        cbus.send_many(conn, [testbus.Echo(n=1), testbus.Echo(n=2)])
    assert hint in str(info.value)


def test_delay_takes_a_timedelta(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    later = testbus.send_echo(conn, n=1, delay=dt.timedelta(hours=1))
    soon = testbus.send_echo(conn, n=2, delay=dt.timedelta(0))
    conn.commit()
    vt = conn.execute(
        "SELECT vt - enqueued_at FROM pgmq.q_testbus__commands WHERE msg_id = %s",
        (later.msg_id,),
    ).fetchone()
    assert vt is not None and dt.timedelta(minutes=59) < vt[0] <= dt.timedelta(hours=1, seconds=5)
    handlers = Recorder.make(testbus)
    drain(dsn, [handlers])
    assert [cmd.n for cmd, _ in handlers.seen] == [2]
    assert cbus.get_command(conn, "testbus", soon.command_id).status == "COMPLETED"  # type: ignore[union-attr]


@pytest.mark.parametrize("delay", [-1, -0.5, dt.timedelta(seconds=-5)])
def test_delay_refuses_a_negative_span(
    conn: psycopg.Connection[Any], testbus: ModuleType, delay: float | dt.timedelta
) -> None:
    with pytest.raises(ValueError, match=r"delay must not be negative, got -[0-9.]+ s"):
        testbus.send_echo(conn, n=1, delay=delay)
    with pytest.raises(ValueError, match="delay must not be negative"):
        cbus.send_many(conn, [testbus.Echo(n=1)], delay=delay)
    assert conn.execute("SELECT count(*) FROM cbus.command").fetchone() == (0,)


def test_delay_at_a_past_moment_runs_at_once(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    """Documented: an aware datetime already past is due at once, not refused."""
    past = testbus.send_echo(conn, n=1, delay=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    conn.commit()
    handlers = Recorder.make(testbus)
    drain(dsn, [handlers])
    assert [cmd.n for cmd, _ in handlers.seen] == [1]
    assert cbus.get_command(conn, "testbus", past.command_id).status == "COMPLETED"  # type: ignore[union-attr]


def test_waiting_on_a_command_never_sent_says_so_at_once(dsn: str, testbus: ModuleType) -> None:
    unknown = uuid.uuid4()
    expected = (
        f"Unknown command {unknown} in domain `testbus`: it was never sent, or the "
        "transaction that sent it has not committed (commit before waiting)"
    )
    started = time.monotonic()
    with cbus.Bus(dsn) as bus, pytest.raises(cbus.NotFoundError) as info:
        testbus.wait_echo(bus, unknown, timeout=30)
    assert str(info.value) == expected
    assert time.monotonic() - started < 5

    async def main() -> None:
        async with cbus.AsyncBus(dsn) as abus:
            await testbus.wait_echo_async(abus, unknown, timeout=30)

    started = time.monotonic()
    with pytest.raises(cbus.NotFoundError) as info:
        asyncio.run(main())
    assert str(info.value) == expected
    assert time.monotonic() - started < 5
