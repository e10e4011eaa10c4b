"""The troubleshooting queue and the audit trail from Python, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

import cbus
import cbus.pgmq
import psycopg
import pytest
from cbus import troubleshooting as tsq

from .helpers import archive_depth, drain, queue_depth, running, wait_for

QUEUE = "testbus__commands"


def make_handlers(testbus: ModuleType) -> Any:
    """Echo fails permanently the first time it sees each `n`, and succeeds after."""

    class Handlers(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self.seen: set[int] = set()
            self.calls = 0

        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            self.calls += 1
            if cmd.n not in self.seen:
                self.seen.add(cmd.n)
                raise cbus.PermanentError("BROKEN", f"n={cmd.n} is broken today")
            return testbus.EchoResult(n=cmd.n, text=cmd.text)

        def reject(self, cmd: Any, ctx: cbus.Context) -> None:
            if cmd.mode == "permanent":
                raise cbus.PermanentError("CANNOT", "never")
            if cmd.mode == "declared":
                raise testbus.RejectError.rejected("no thanks")
            raise ValueError("always fails")

        def flaky(self, cmd: Any, ctx: cbus.Context) -> None:
            if ctx.attempt < cmd.succeed_on:
                raise cbus.TransientError(f"not yet (attempt {ctx.attempt})")

    return Handlers()


def in_tsq(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, count: int = 1
) -> tuple[list[uuid.UUID], Any]:
    """Send `count` Echo commands and drain: each lands in the troubleshooting queue."""
    sent = [testbus.send_echo(conn, n=i) for i in range(count)]
    conn.commit()
    handlers = make_handlers(testbus)
    drain(dsn, [handlers])
    for s in sent:
        assert status(conn, s.command_id) == "IN_TROUBLESHOOTING_QUEUE"
    return [s.command_id for s in sent], handlers


def status(conn: psycopg.Connection[Any], command_id: uuid.UUID) -> str:
    record = cbus.get_command(conn, "testbus", command_id)
    conn.commit()
    assert record is not None
    return record.status


def events(audit: list[cbus.AuditEvent]) -> list[str]:
    return [e.event + ("*" if e.synthetic else "") for e in audit]


@pytest.fixture
def autocommit(dsn: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


# -- list ------------------------------------------------------------------------


def test_list_filters_by_domain_and_kind(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, shop_orders: ModuleType
) -> None:
    echo_ids, _ = in_tsq(dsn, conn, testbus, 3)
    rejects = [testbus.send_reject(conn, mode="permanent") for _ in range(2)]
    done = testbus.send_flaky(conn, succeed_on=1)
    order = shop_orders.send_cancel_order(conn, order_id=uuid.uuid4())
    conn.commit()

    class Orders(shop_orders.OrdersHandlers):  # type: ignore[misc, name-defined]
        def cancel_order(self, cmd: Any, ctx: cbus.Context) -> None:
            raise cbus.PermanentError("NO_SUCH_ORDER", str(cmd.order_id))

    drain(dsn, [make_handlers(testbus), Orders()])

    def ids(**filters: Any) -> set[uuid.UUID]:
        page = tsq.list_troubleshooting(conn, **filters)
        assert page.next_cursor is None
        return {e.command_id for e in page.items}

    reject_ids = {r.command_id for r in rejects}
    everything = ids()
    assert everything == set(echo_ids) | reject_ids | {order.command_id}
    assert status(conn, done.command_id) == "COMPLETED"
    assert ids(domain="orders") == {order.command_id}
    assert ids(domain="testbus") == everything - {order.command_id}
    assert ids(kind="testbus.Reject") == reject_ids
    assert ids(kind="Reject") == reject_ids
    assert ids(domain="testbus", kind="CancelOrder") == set()
    assert ids(kind="CancelOrder") == {order.command_id}
    assert ids(domain="nowhere") == set()

    entry = next(e for e in tsq.list_troubleshooting(conn, kind="Reject").items)
    assert (entry.domain, entry.kind, entry.attempts, entry.max_attempts) == (
        "testbus",
        "testbus.Reject",
        1,
        2,
    )
    assert (entry.last_error_type, entry.last_error_code, entry.last_error_message) == (
        "PermanentError",
        "CANNOT",
        "never",
    )


def test_list_pages_newest_first_with_a_keyset_cursor(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, autocommit: Any
) -> None:
    command_ids, _ = in_tsq(dsn, conn, testbus, 7)
    full = tsq.list_troubleshooting(conn)
    assert len(full.items) == 7 and full.next_cursor is None
    stamps = [e.updated_at for e in full.items]
    assert stamps == sorted(stamps, reverse=True)
    assert {e.command_id for e in full.items} == set(command_ids)

    first = tsq.list_troubleshooting(conn, limit=3)
    assert [e.command_id for e in first.items] == [e.command_id for e in full.items[:3]]
    assert first.next_cursor == first.items[-1].cursor
    # An entry of the first page leaves the queue: the next page does not shift.
    tsq.cancel(autocommit, "testbus", first.items[0].command_id, operator="ann", reason="dup")
    second = tsq.list_troubleshooting(conn, limit=3, after=first.next_cursor)
    assert [e.command_id for e in second.items] == [e.command_id for e in full.items[3:6]]
    assert second.next_cursor is not None
    third = tsq.list_troubleshooting(conn, limit=3, after=second.next_cursor)
    assert [e.command_id for e in third.items] == [full.items[6].command_id]
    assert third.next_cursor is None


def test_list_refuses_a_bad_cursor_or_limit(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(ValueError) as exc:
        tsq.list_troubleshooting(conn, after="not-a-cursor")
    assert (
        str(exc.value) == "Invalid cursor 'not-a-cursor': pass the `next_cursor` of a previous page"
    )
    with pytest.raises(ValueError) as exc:
        tsq.list_troubleshooting(conn, limit=0)
    assert str(exc.value) == "Invalid limit 0: expected 1 to 1000"


# -- show and the audit trail ------------------------------------------------------


def test_show_gives_record_payload_and_audit(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    sent = testbus.send_echo(conn, n=4, text="four")
    conn.commit()
    waiting = tsq.show_command(conn, "testbus", sent.command_id)
    assert (waiting.record.status, waiting.message_source, waiting.msg_id) == (
        "PENDING",
        "queue",
        sent.msg_id,
    )
    assert events(waiting.audit) == ["sent*"]

    drain(dsn, [make_handlers(testbus)])
    detail = tsq.show_command(conn, "testbus", str(sent.command_id))
    assert detail.record.status == "IN_TROUBLESHOOTING_QUEUE"
    assert detail.record.last_error_message == "n=4 is broken today"
    assert (detail.message_source, detail.msg_id) == ("archive", sent.msg_id)
    assert detail.message == {"n": 4, "text": "four"}
    assert detail.headers["kind"] == "testbus.Echo"
    assert detail.headers["command_id"] == str(sent.command_id)
    assert events(detail.audit) == ["sent*", "failed", "moved_to_troubleshooting"]
    failed = detail.audit[1]
    assert failed.attempt == 1 and failed.operator is None
    assert failed.detail == {
        "type": "PermanentError",
        "code": "BROKEN",
        "message": "n=4 is broken today",
    }
    assert detail.audit[0].at == detail.record.created_at


def test_show_finds_the_message_by_header_when_the_log_has_no_msg_id(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    (command_id,), _ = in_tsq(dsn, conn, testbus)
    conn.execute("UPDATE cbus.command SET msg_id = NULL WHERE command_id = %s", (command_id,))
    conn.commit()
    detail = tsq.show_command(conn, "testbus", command_id)
    assert detail.message_source == "archive"
    assert detail.message == {"n": 0, "text": ""}


def test_show_and_audit_of_an_unknown_command(conn: psycopg.Connection[Any]) -> None:
    missing = uuid.UUID("00000000-0000-4000-8000-000000000000")
    with pytest.raises(cbus.NotFoundError) as exc:
        tsq.show_command(conn, "testbus", missing)
    assert str(exc.value) == f"No command {missing} in domain `testbus`"
    with pytest.raises(cbus.NotFoundError) as exc:
        cbus.get_audit(conn, "orders", missing)
    assert str(exc.value) == f"No command {missing} in domain `orders`"
    with pytest.raises(ValueError) as value_error:
        cbus.get_audit(conn, "orders", "nope")
    assert str(value_error.value) == "Invalid command_id 'nope': expected a UUID"


def test_audit_at_each_level(dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType) -> None:
    lean = testbus.send_flaky(conn, succeed_on=2)
    declared = testbus.send_reject(conn, mode="declared")
    conn.commit()
    drain(dsn, [make_handlers(testbus)])
    full = testbus.send_flaky(conn, succeed_on=1)
    conn.commit()
    drain(dsn, [make_handlers(testbus)], audit="full")

    trail = cbus.get_audit(conn, "testbus", lean.command_id)
    assert events(trail) == ["sent*", "failed", "retry_scheduled", "completed*"]
    assert [e.attempt for e in trail] == [None, 1, 1, None]
    assert trail[-1].at == cbus.get_command(conn, "testbus", lean.command_id).finished_at  # type: ignore[union-attr]
    # A declared business error ends the command with the worker's own `failed` row.
    assert events(cbus.get_audit(conn, "testbus", declared.command_id)) == ["sent*", "failed"]
    # The full level also records each receipt, attempt by attempt.
    trail = cbus.get_audit(conn, "testbus", full.command_id)
    assert events(trail) == ["sent*", "received", "completed"]
    assert [e.attempt for e in trail] == [None, 1, 1]


# -- actions ---------------------------------------------------------------------


def test_retry_runs_the_command_again_and_it_completes(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, autocommit: Any
) -> None:
    (command_id,), handlers = in_tsq(dsn, conn, testbus)
    tsq.retry(autocommit, "testbus", command_id, operator="alice", reason="fixed upstream")

    record = cbus.get_command(conn, "testbus", command_id)
    assert record is not None
    assert (record.status, record.attempts, record.msg_id, record.finished_at) == (
        "PENDING",
        0,
        None,
        None,
    )
    assert queue_depth(conn, QUEUE) == 1
    conn.commit()

    drain(dsn, [handlers])  # the same handler object: it now succeeds
    assert handlers.calls == 2
    record = cbus.get_command(conn, "testbus", command_id)
    assert record is not None
    assert (record.status, record.attempts, record.last_error_code) == ("COMPLETED", 1, None)
    assert record.result_as(testbus.EchoResult) == testbus.EchoResult(n=0, text="")
    assert archive_depth(conn, QUEUE) == 1  # the first message, kept for the record

    trail = cbus.get_audit(conn, "testbus", command_id)
    assert events(trail) == [
        "sent*",
        "failed",
        "moved_to_troubleshooting",
        "retried",
        "completed*",
    ]
    retried = trail[3]
    assert (retried.operator, retried.attempt) == ("alice", 1)
    assert retried.detail["reason"] == "fixed upstream"
    assert retried.detail["archived_msg_id"] != retried.detail["msg_id"]


def test_retry_wakes_a_waiting_worker(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, autocommit: Any
) -> None:
    (command_id,), handlers = in_tsq(dsn, conn, testbus)
    with running(dsn, [handlers], concurrency=1, poll_interval=30.0):
        time.sleep(0.5)  # the consumer now waits; only the retry's NOTIFY can wake it
        tsq.retry(autocommit, "testbus", command_id, operator="alice")
        wait_for(lambda: status(conn, command_id) == "COMPLETED", timeout=10)


def test_retry_resets_the_attempts_budget(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, autocommit: Any
) -> None:
    # Reject allows 2 attempts; after a retry it gets 2 more, then is set aside again.
    sent = testbus.send_reject(conn, mode="exception")
    conn.commit()
    drain(dsn, [make_handlers(testbus)])
    tsq.retry(autocommit, "testbus", sent.command_id, operator="alice")
    drain(dsn, [make_handlers(testbus)])
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None
    assert (record.status, record.attempts) == ("IN_TROUBLESHOOTING_QUEUE", 2)
    trail = events(cbus.get_audit(conn, "testbus", sent.command_id))
    attempts = ["failed", "retry_scheduled", "failed", "moved_to_troubleshooting"]
    assert trail == ["sent*", *attempts, "retried", *attempts]
    # The second failure archived the re-sent message: show finds that one now.
    detail = tsq.show_command(conn, "testbus", sent.command_id)
    assert detail.message_source == "archive" and detail.msg_id == record.msg_id
    assert archive_depth(conn, QUEUE) == 2


def test_cancel_ends_the_command(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, autocommit: Any
) -> None:
    (command_id,), _ = in_tsq(dsn, conn, testbus)
    tsq.cancel(autocommit, "testbus", command_id, operator="bob", reason="customer left")
    record = cbus.get_command(conn, "testbus", command_id)
    assert record is not None
    assert record.status == "CANCELED" and record.finished_at is not None
    assert record.last_error_code == "BROKEN"  # why it was set aside stays on record
    assert tsq.list_troubleshooting(conn).items == []
    trail = cbus.get_audit(conn, "testbus", command_id)
    assert events(trail) == ["sent*", "failed", "moved_to_troubleshooting", "canceled"]
    assert (trail[-1].operator, trail[-1].detail) == ("bob", {"reason": "customer left"})

    with pytest.raises(cbus.ConcurrentOperationError) as exc:
        tsq.cancel(autocommit, "testbus", command_id, operator="carol", reason="again")
    assert str(exc.value) == (
        f"Cannot cancel command {command_id} in domain `testbus`: it is CANCELED, not "
        f"IN_TROUBLESHOOTING_QUEUE (canceled by bob at {trail[-1].at.isoformat()})"
    )


def test_complete_stores_the_operators_result(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, autocommit: Any
) -> None:
    (command_id,), _ = in_tsq(dsn, conn, testbus)
    tsq.complete(
        autocommit,
        "testbus",
        command_id,
        operator="dora",
        result=testbus.EchoResult(n=7, text="by hand"),
        reason="done manually",
    )
    record = cbus.get_command(conn, "testbus", command_id)
    assert record is not None
    assert (record.status, record.result, record.last_error_code) == (
        "COMPLETED",
        {"n": 7, "text": "by hand"},
        None,
    )
    assert record.result_as(testbus.EchoResult) == testbus.EchoResult(n=7, text="by hand")
    trail = cbus.get_audit(conn, "testbus", command_id)
    assert events(trail)[-1] == "completed"  # the operator's row; nothing synthesised
    assert (trail[-1].operator, trail[-1].detail) == ("dora", {"reason": "done manually"})


def test_complete_checks_the_result_against_the_commands_result_class(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, autocommit: Any
) -> None:
    """The generated module is imported here, so a result no reader could decode is refused."""
    (echo,), _ = in_tsq(dsn, conn, testbus)
    with pytest.raises(cbus.ValidationError, match=r"Invalid result for `testbus\.Echo`"):
        tsq.complete(autocommit, "testbus", echo, operator="dora", result={"n": "seven"})
    assert status(conn, echo) == "IN_TROUBLESHOOTING_QUEUE"
    tsq.complete(autocommit, "testbus", echo, operator="dora", result={"n": 7, "text": "x"})
    record = cbus.get_command(conn, "testbus", echo)
    assert record is not None and record.result == {"n": 7, "text": "x"}
    conn.commit()

    flaky = testbus.send_reject(conn, mode="permanent")
    conn.commit()
    drain(dsn, [make_handlers(testbus)])
    assert status(conn, flaky.command_id) == "IN_TROUBLESHOOTING_QUEUE"
    with pytest.raises(cbus.ValidationError, match="declares no result"):
        tsq.complete(autocommit, "testbus", flaky.command_id, operator="dora", result={"a": 1})
    tsq.complete(autocommit, "testbus", flaky.command_id, operator="dora", result=None)
    assert status(conn, flaky.command_id) == "COMPLETED"


def test_cancel_and_complete_reply_and_wake_waiters(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, autocommit: Any
) -> None:
    conn.execute("SELECT pgmq.create('ops_replies')")
    to_cancel = testbus.send_echo(conn, n=1, reply_to="ops_replies")
    to_complete = testbus.send_echo(conn, n=2, reply_to="ops_replies")
    to_retry = testbus.send_echo(conn, n=3, reply_to="ops_replies")
    conn.commit()
    drain(dsn, [make_handlers(testbus)])

    waited: list[Any] = []

    def wait() -> None:
        with psycopg.connect(dsn, autocommit=True) as waiter:
            waited.append(
                cbus.wait_for(
                    waiter, "testbus", to_complete.command_id, include_troubleshooting=False
                )
            )

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    tsq.cancel(autocommit, "testbus", to_cancel.command_id, operator="gil", reason="duplicate")
    tsq.retry(autocommit, "testbus", to_retry.command_id, operator="gil")  # no reply: not ended
    tsq.complete(
        autocommit, "testbus", to_complete.command_id, operator="gil", result={"n": 2, "text": "ok"}
    )
    thread.join(5)
    assert [r.status for r in waited] == ["COMPLETED"]

    cur = conn.cursor()
    cbus.pgmq.register_adapters(cur)
    rows = cur.execute("SELECT message FROM pgmq.q_ops_replies ORDER BY msg_id").fetchall()
    conn.commit()
    canceled, completed = (cbus.decode_reply(m) for (m,) in rows)
    assert (canceled.command_id, canceled.outcome, canceled.error) == (
        to_cancel.command_id,
        "CANCELED",
        cbus.ReplyError("CANCELED", "duplicate"),
    )
    assert (completed.command_id, completed.outcome, completed.error) == (
        to_complete.command_id,
        "SUCCESS",
        None,
    )
    assert testbus.echo_result(completed) == testbus.EchoResult(n=2, text="ok")


def test_actions_need_a_command_in_the_queue(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, autocommit: Any
) -> None:
    done = testbus.send_flaky(conn, succeed_on=1)
    conn.commit()
    drain(dsn, [make_handlers(testbus)])
    missing = uuid.uuid4()
    actions: dict[str, Callable[..., None]] = {
        "retry": lambda cid: tsq.retry(autocommit, "testbus", cid, operator="eve"),
        "cancel": lambda cid: tsq.cancel(autocommit, "testbus", cid, operator="eve", reason="x"),
        "complete": lambda cid: tsq.complete(
            autocommit, "testbus", cid, operator="eve", result=None
        ),
    }
    for verb, act in actions.items():
        with pytest.raises(cbus.ConcurrentOperationError) as conflict:
            act(done.command_id)
        assert str(conflict.value) == (
            f"Cannot {verb} command {done.command_id} in domain `testbus`: it is COMPLETED, "
            "not IN_TROUBLESHOOTING_QUEUE"
        )
        with pytest.raises(cbus.NotFoundError) as not_found:
            act(missing)
        assert str(not_found.value) == f"No command {missing} in domain `testbus`"
    assert events(cbus.get_audit(conn, "testbus", done.command_id)) == ["sent*", "completed*"]
    with pytest.raises(ValueError) as exc:
        tsq.retry(autocommit, "testbus", done.command_id, operator=" ")
    assert str(exc.value) == "An operator name is required: pass `operator=` (the CLI uses $USER)"


def test_retry_without_the_archived_message_changes_nothing(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, autocommit: Any
) -> None:
    (command_id,), _ = in_tsq(dsn, conn, testbus)
    conn.execute("DELETE FROM pgmq.a_testbus__commands")
    conn.commit()
    with pytest.raises(cbus.NotFoundError) as exc:
        tsq.retry(autocommit, "testbus", command_id, operator="alice")
    assert str(exc.value) == (
        f"Cannot retry command {command_id} in domain `testbus`: its message is no longer in "
        '"pgmq"."a_testbus__commands" (complete or cancel it instead)'
    )
    assert status(conn, command_id) == "IN_TROUBLESHOOTING_QUEUE"
    assert events(cbus.get_audit(conn, "testbus", command_id))[-1] == "moved_to_troubleshooting"
    conn.commit()
    tsq.cancel(autocommit, "testbus", command_id, operator="alice", reason="payload purged")
    assert status(conn, command_id) == "CANCELED"


def test_retry_refuses_a_message_that_carries_no_command_id(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, autocommit: Any
) -> None:
    """Its id was made up when it was set aside; sent again, it would get another."""
    conn.execute("SELECT pgmq.send(%s, '{\"n\": 1}'::jsonb)", (QUEUE,))
    conn.commit()
    drain(dsn, [make_handlers(testbus)])
    row = conn.execute(
        "SELECT command_id FROM cbus.command WHERE status = 'IN_TROUBLESHOOTING_QUEUE'"
    ).fetchone()
    conn.commit()
    assert row is not None
    (command_id,) = row
    with pytest.raises(cbus.CannotRetry, match="has no command_id header of its own"):
        tsq.retry(autocommit, "testbus", command_id, operator="alice")
    assert status(conn, command_id) == "IN_TROUBLESHOOTING_QUEUE"
    assert queue_depth(conn, QUEUE) == 0
    tsq.cancel(autocommit, "testbus", command_id, operator="alice", reason="no headers")
    assert status(conn, command_id) == "CANCELED"


def test_actions_join_the_callers_transaction(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    (first, second), _ = in_tsq(dsn, conn, testbus, 2)
    tsq.cancel(conn, "testbus", first, operator="fay", reason="oops")
    conn.rollback()
    assert status(conn, first) == "IN_TROUBLESHOOTING_QUEUE"

    # A failing action leaves the caller's transaction usable and its own work intact.
    conn.execute("INSERT INTO effects (command_id, value) VALUES (%s, 1)", (first,))
    tsq.retry(conn, "testbus", first, operator="fay")
    with pytest.raises(cbus.ConcurrentOperationError):
        tsq.retry(conn, "testbus", first, operator="fay")
    tsq.complete(conn, "testbus", second, operator="fay", result={"n": 1, "text": ""})
    conn.commit()
    assert status(conn, first) == "PENDING" and status(conn, second) == "COMPLETED"
    assert conn.execute("SELECT count(*) FROM effects").fetchone() == (1,)
    assert queue_depth(conn, QUEUE) == 1


def test_two_operators_at_once_one_wins(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    command_ids, _ = in_tsq(dsn, conn, testbus, 10)
    barrier = threading.Barrier(2)
    outcomes: dict[str, list[object]] = {"retry": [], "cancel": []}

    def operate(verb: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as mine:
            for command_id in command_ids:
                barrier.wait(10)
                try:
                    if verb == "retry":
                        tsq.retry(mine, "testbus", command_id, operator="alice")
                    else:
                        tsq.cancel(mine, "testbus", command_id, operator="bob", reason="race")
                    outcomes[verb].append("won")
                except cbus.ConcurrentOperationError as exc:
                    outcomes[verb].append(exc)

    threads = [threading.Thread(target=operate, args=(verb,)) for verb in outcomes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, command_id in enumerate(command_ids):
        pair = outcomes["retry"][i], outcomes["cancel"][i]
        assert pair.count("won") == 1, pair
        loser = next(o for o in pair if o != "won")
        assert isinstance(loser, cbus.ConcurrentOperationError)
        winner = "retry" if pair[0] == "won" else "cancel"
        expected = "PENDING" if winner == "retry" else "CANCELED"
        assert status(conn, command_id) == expected
        operators = [e.operator for e in cbus.get_audit(conn, "testbus", command_id) if e.operator]
        assert operators == ["alice" if winner == "retry" else "bob"]
    assert queue_depth(conn, QUEUE) == outcomes["retry"].count("won")


def test_second_operator_waits_for_the_first_and_is_told_who_won(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    (command_id,), _ = in_tsq(dsn, conn, testbus)
    errors: list[BaseException] = []
    with psycopg.connect(dsn) as first:
        tsq.cancel(first, "testbus", command_id, operator="alice", reason="mine")  # not committed

        def second() -> None:
            with psycopg.connect(dsn, autocommit=True) as other:
                try:
                    tsq.complete(other, "testbus", command_id, operator="bob", result=None)
                except BaseException as exc:
                    errors.append(exc)

        thread = threading.Thread(target=second)
        thread.start()

        def blocked() -> bool:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()
            conn.commit()
            return row is not None and row[0] == 1

        wait_for(blocked, timeout=10)
        time.sleep(0.1)
        first.commit()
        thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], cbus.ConcurrentOperationError)
    canceled = cbus.get_audit(conn, "testbus", command_id)[-1]
    assert str(errors[0]) == (
        f"Cannot complete command {command_id} in domain `testbus`: it is CANCELED, not "
        f"IN_TROUBLESHOOTING_QUEUE (canceled by alice at {canceled.at.isoformat()})"
    )
    assert status(conn, command_id) == "CANCELED"


def test_async_twins(dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType) -> None:
    command_ids, handlers = in_tsq(dsn, conn, testbus, 3)

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            page = await cbus.list_troubleshooting_async(aconn, domain="testbus", limit=2)
            assert len(page.items) == 2 and page.next_cursor is not None
            rest = await cbus.list_troubleshooting_async(aconn, after=page.next_cursor)
            assert len(rest.items) == 1
            detail = await cbus.show_command_async(aconn, "testbus", command_ids[0])
            assert detail.message == {"n": 0, "text": ""}
            await tsq.retry_async(aconn, "testbus", command_ids[0], operator="ann")
            await tsq.cancel_async(aconn, "testbus", command_ids[1], operator="ann", reason="r")
            await tsq.complete_async(
                aconn, "testbus", command_ids[2], operator="ann", result={"n": 2, "text": ""}
            )
            with pytest.raises(cbus.ConcurrentOperationError):
                await tsq.cancel_async(aconn, "testbus", command_ids[2], operator="x", reason="r")
            trail = await cbus.get_audit_async(aconn, "testbus", command_ids[1])
            assert events(trail)[-1] == "canceled"

    asyncio.run(main())
    drain(dsn, [handlers])
    assert [status(conn, c) for c in command_ids] == ["COMPLETED", "CANCELED", "COMPLETED"]
