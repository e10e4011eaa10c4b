"""Results and workflows: replies, business errors, request/reply, batches, delay, causation."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from types import ModuleType
from typing import Any

import cbus
import cbus.pgmq
import psycopg
import pytest

from .helpers import drain, running, wait_for


def make_handlers(testbus: ModuleType) -> Any:
    class Handlers(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self.seen: list[tuple[str, Any, float]] = []
            self.lock = threading.Lock()

        def _see(self, name: str, cmd: Any) -> None:
            with self.lock:
                self.seen.append((name, cmd, time.monotonic()))

        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            self._see("echo", cmd)
            return testbus.EchoResult(n=cmd.n, text=cmd.text.upper())

        def reject(self, cmd: Any, ctx: cbus.Context) -> None:
            self._see("reject", cmd)
            if cmd.mode == "declared":
                raise testbus.RejectError.over_limit("limit is 3", details={"limit": 3})
            raise cbus.PermanentError("BROKEN", "cannot")

        def chain(self, cmd: Any, ctx: cbus.Context) -> None:
            self._see("chain", cmd)
            testbus.send_echo(ctx, n=cmd.n + 1, text="from chain")
            if cmd.fail_after_send:
                raise cbus.PermanentError("CHAIN_FAILED", "after sending")

    return Handlers()


def create_queue(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute("SELECT pgmq.create(%s)", (name,))
    conn.commit()


def read_queue(conn: psycopg.Connection[Any], name: str) -> list[tuple[Any, Any]]:
    cur = conn.cursor()
    cbus.pgmq.register_adapters(cur)
    rows = cur.execute(
        psycopg.sql.SQL("SELECT message, headers FROM {} ORDER BY msg_id").format(
            psycopg.sql.Identifier("pgmq", "q_" + name)
        )
    ).fetchall()
    conn.commit()
    return rows


def test_success_reply_carries_the_typed_result(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    create_queue(conn, "replies")
    corr = uuid.uuid4()
    sent = testbus.send_echo(conn, n=3, text="hi", reply_to="replies", correlation_id=corr)
    conn.commit()
    drain(dsn, [make_handlers(testbus)])

    [(message, headers)] = read_queue(conn, "replies")
    assert cbus.codec.decode(headers, dict) == {"kind": "cbus.Reply"}
    reply = cbus.decode_reply(message)
    # As psycopg loads jsonb by default, too.
    assert cbus.decode_reply(cbus.codec.decode(message, dict)) == reply
    assert (reply.command_id, reply.correlation_id, reply.kind, reply.outcome) == (
        sent.command_id,
        corr,
        "testbus.Echo",
        "SUCCESS",
    )
    assert testbus.echo_result(reply) == testbus.EchoResult(n=3, text="HI")
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None
    assert testbus.echo_result(record) == testbus.EchoResult(n=3, text="HI")


def test_business_error_fails_at_once_with_a_failed_reply(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    create_queue(conn, "replies")
    sent = testbus.send_reject(conn, mode="declared", reply_to="replies")
    conn.commit()
    handlers = make_handlers(testbus)
    drain(dsn, [handlers])
    assert len(handlers.seen) == 1  # no retry

    [(message, _)] = read_queue(conn, "replies")
    reply = cbus.decode_reply(message)
    assert reply.outcome == "FAILED"
    assert reply.error == cbus.ReplyError("OVER_LIMIT", "limit is 3", "RejectError", {"limit": 3})
    with pytest.raises(testbus.RejectError) as info:
        testbus.reject_result(reply)
    assert info.value.code == "OVER_LIMIT"
    assert info.value.message == "limit is 3"
    assert info.value.details == {"limit": 3}
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None and record.status == "FAILED"
    assert record.last_error_details == {"limit": 3}
    with pytest.raises(testbus.RejectError) as info:
        testbus.reject_result(record)
    assert info.value.details == {"limit": 3}
    [audited] = [e for e in cbus.get_audit(conn, "testbus", sent.command_id) if e.event == "failed"]
    assert audited.detail is not None and audited.detail["details"] == {"limit": 3}


def test_reply_queue_that_does_not_exist_completes_once_and_is_audited(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    # The handler must not run again and again because its reply cannot be sent:
    # the command completes (its result stays in the log) and the audit trail says
    # the reply was undeliverable.
    sent = testbus.send_echo(conn, n=1, reply_to="nobody_listens")
    conn.commit()
    handlers = make_handlers(testbus)
    drain(dsn, [handlers])
    assert len(handlers.seen) == 1
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None and record.status == "COMPLETED"
    assert testbus.echo_result(record) == testbus.EchoResult(n=1, text="")
    rows = conn.execute(
        "SELECT event, detail FROM cbus.audit WHERE command_id = %s", (sent.command_id,)
    ).fetchall()
    assert rows == [
        (
            "reply_undeliverable",
            {"reply_to": "nobody_listens", "reason": "the reply queue does not exist"},
        )
    ]


def test_troubleshooting_is_not_a_result(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    sent = testbus.send_reject(conn, mode="permanent")
    conn.commit()
    drain(dsn, [make_handlers(testbus)])
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None
    with pytest.raises(cbus.CommandInTroubleshooting) as info:
        testbus.reject_result(record)
    assert str(info.value) == (
        f"Command {sent.command_id} is in the troubleshooting queue: BROKEN: cannot"
    )


def test_request_reply_waits_for_the_typed_result(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    handlers = make_handlers(testbus)
    with running(dsn, [handlers], concurrency=2, poll_interval=30.0), cbus.Bus(dsn) as bus:
        time.sleep(0.3)
        sent = testbus.send_echo(bus, n=41, text="x")
        assert testbus.wait_echo(bus, sent.command_id, timeout=20) == testbus.EchoResult(
            n=41, text="X"
        )
        failing = testbus.send_reject(bus, mode="declared")
        with pytest.raises(testbus.RejectError):
            testbus.wait_reject(bus, failing.command_id, timeout=20)

        async def main() -> Any:
            async with cbus.AsyncBus(dsn) as abus:
                sent = await testbus.send_echo_async(abus, n=7)
                return await testbus.wait_echo_async(abus, sent.command_id, timeout=20)

        assert asyncio.run(main()) == testbus.EchoResult(n=7, text="")


def test_wait_times_out_and_needs_autocommit(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    sent = testbus.send_echo(conn, n=1)
    conn.commit()
    with pytest.raises(ValueError, match="autocommit"):
        testbus.wait_echo(conn, sent.command_id, timeout=0.1)
    conn.autocommit = True
    started = time.monotonic()
    with pytest.raises(cbus.ReplyTimeout) as info:
        testbus.wait_echo(conn, sent.command_id, timeout=0.5)
    assert time.monotonic() - started >= 0.5
    assert str(info.value) == (
        f"Command {sent.command_id} in domain `testbus` did not end within 0.5 s (status PENDING)"
    )


def test_batch_completes_once_when_its_last_command_ends(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    create_queue(conn, "batch_done")
    batch_id = uuid.uuid4()
    commands = [testbus.Echo(n=i) for i in range(40)] + [
        testbus.Reject(mode="declared"),
        testbus.Reject(mode="permanent"),
    ]
    cbus.send_many(conn, commands, batch_id=batch_id, reply_to="batch_done")
    conn.commit()
    status = cbus.batch_status(conn, batch_id)
    assert status is not None and (status.total, status.pending, status.done) == (42, 42, False)

    drain(dsn, [make_handlers(testbus)], concurrency=4, batch_size=5)
    status = cbus.batch_status(conn, batch_id)
    assert status is not None
    assert (status.completed, status.failed, status.in_troubleshooting, status.done) == (
        40,
        1,
        1,
        False,
    )
    completions = [m for m, h in read_queue(conn, "batch_done") if b"BatchCompleted" in h]
    assert completions == []

    # The last command ends by an operator's hand: the batch completes then, durably.
    stuck = conn.execute(
        "SELECT command_id FROM cbus.command WHERE batch_id = %s AND status = %s",
        (batch_id, "IN_TROUBLESHOOTING_QUEUE"),
    ).fetchone()
    assert stuck is not None
    conn.commit()
    cbus.troubleshooting.cancel(conn, "testbus", stuck[0], operator="ops", reason="obsolete")
    conn.commit()
    status = cbus.batch_status(conn, batch_id)
    assert status is not None and status.done and status.canceled == 1
    completions = [m for m, h in read_queue(conn, "batch_done") if b"BatchCompleted" in h]
    assert len(completions) == 1
    done = cbus.decode_batch_completed(completions[0])
    assert (done.batch_id, done.total, done.completed, done.failed, done.canceled) == (
        batch_id,
        42,
        40,
        1,
        1,
    )


def test_racing_completers_send_exactly_one_completion(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    create_queue(conn, "batch_done")
    batch_ids = [uuid.uuid4() for _ in range(5)]
    for batch_id in batch_ids:
        cbus.send_many(
            conn, [testbus.Echo(n=i) for i in range(8)], batch_id=batch_id, reply_to="batch_done"
        )
    conn.commit()
    # Batches of 1 message over 4 consumers: the last commands of a batch end in
    # concurrent transactions.
    drain(dsn, [make_handlers(testbus)], concurrency=4, batch_size=1)
    completions = [
        cbus.decode_batch_completed(m)
        for m, h in read_queue(conn, "batch_done")
        if b"BatchCompleted" in h
    ]
    assert sorted(c.batch_id for c in completions) == sorted(batch_ids)
    assert all(c.completed == 8 for c in completions)
    assert all(cbus.batch_status(conn, b).done for b in batch_ids)  # type: ignore[union-attr]


def test_wait_batch(dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType) -> None:
    batch_id = uuid.uuid4()
    cbus.send_many(conn, [testbus.Echo(n=i) for i in range(10)], batch_id=batch_id)
    conn.commit()
    with running(dsn, [make_handlers(testbus)]), cbus.Bus(dsn) as bus:
        status = cbus.wait_batch(bus, batch_id, timeout=20)
    assert status.done and status.completed == 10


def test_delayed_command_is_invisible_until_its_time(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    handlers = make_handlers(testbus)
    with running(dsn, [handlers], poll_interval=0.1):
        sent_at = time.monotonic()
        sent = testbus.send_echo(conn, n=1, delay=1.5)
        conn.commit()
        time.sleep(0.7)
        assert handlers.seen == []
        assert cbus.get_command(conn, "testbus", sent.command_id).status == "PENDING"  # type: ignore[union-attr]
        conn.commit()
        wait_for(lambda: len(handlers.seen) == 1, timeout=10)
    assert handlers.seen[0][2] - sent_at >= 1.5


def test_handler_sends_follow_up_with_the_correlation_id(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    corr = uuid.uuid4()
    ok = testbus.send_chain(conn, n=1, correlation_id=corr)
    failed = testbus.send_chain(conn, n=100, fail_after_send=True)
    conn.commit()
    handlers = make_handlers(testbus)
    drain(dsn, [handlers])

    flow = cbus.trace(conn, corr)
    assert [(r.kind, r.status) for r in flow] == [
        ("testbus.Chain", "COMPLETED"),
        ("testbus.Echo", "COMPLETED"),
    ]
    assert flow[1].causation_id == ok.command_id
    assert flow[1].correlation_id == corr
    # The failing chain's follow-up rolled back with it: sent only if its cause completes.
    echoed = sorted(cmd.n for name, cmd, _ in handlers.seen if name == "echo")
    assert echoed == [2]
    assert [r.kind for r in cbus.trace(conn, failed.correlation_id)] == ["testbus.Chain"]


@pytest.mark.parametrize("first_statement", [True, False])
def test_handler_send_many_commits_only_with_its_cause(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, first_statement: bool
) -> None:
    """send_many through ctx, as the chunk's first statement or after a neighbour wrote."""
    handlers = make_handlers(testbus)

    def chain(cmd: Any, ctx: cbus.Context) -> None:
        handlers._see("chain", cmd)
        cbus.send_many(ctx, [testbus.Echo(n=cmd.n + 1), testbus.Echo(n=cmd.n + 2)])
        if cmd.fail_after_send:
            raise cbus.PermanentError("CHAIN_FAILED", "after sending")

    handlers.chain = chain
    if not first_statement:
        testbus.send_echo(conn, n=0)  # handled first, no write: the chunk stays idle
    ok = testbus.send_chain(conn, n=10)
    failed = testbus.send_chain(conn, n=100, fail_after_send=True)
    conn.commit()
    drain(dsn, [handlers])

    echoed = sorted(cmd.n for name, cmd, _ in handlers.seen if name == "echo")
    assert echoed == ([0] if not first_statement else []) + [11, 12]
    flow = cbus.trace(conn, ok.correlation_id)
    assert [(r.kind, r.status) for r in flow] == [("testbus.Chain", "COMPLETED")] + [
        ("testbus.Echo", "COMPLETED")
    ] * 2
    assert [r.kind for r in cbus.trace(conn, failed.correlation_id)] == ["testbus.Chain"]
