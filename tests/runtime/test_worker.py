"""The worker against a real PostgreSQL: dispatch, outcomes, isolation, poison, leases."""

from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from types import ModuleType
from typing import Any

import cbus
import msgspec
import psycopg
import pytest

from .helpers import archive_depth, drain, queue_depth, running, statuses, wait_for
from .helpers import running as running_worker

QUEUE = "testbus__commands"


def make_handlers(testbus: ModuleType) -> Any:
    class Handlers(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self.calls: dict[str, int] = {}
            self.attempts: list[int] = []

        def _count(self, name: str) -> None:
            self.calls[name] = self.calls.get(name, 0) + 1

        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            self._count("echo")
            return testbus.EchoResult(n=cmd.n, text=cmd.text)

        def write_row(self, cmd: Any, ctx: cbus.Context) -> None:
            self._count("write_row")
            ctx.conn.execute(
                "INSERT INTO effects (command_id, value) VALUES (%s, %s)",
                (ctx.command_id, cmd.value),
            )
            if cmd.fail_after_write:
                raise RuntimeError("failed after writing")

        def flaky(self, cmd: Any, ctx: cbus.Context) -> None:
            self._count("flaky")
            self.attempts.append(ctx.attempt)
            if ctx.attempt < cmd.succeed_on:
                raise cbus.TransientError(f"not yet (attempt {ctx.attempt})")

        def reject(self, cmd: Any, ctx: cbus.Context) -> None:
            self._count("reject")
            if cmd.mode == "declared":
                raise testbus.RejectError.rejected("no thanks")
            if cmd.mode == "undeclared":
                raise cbus.BusinessError("NOT_IN_SCHEMA", "oops")
            if cmd.mode == "permanent":
                raise cbus.PermanentError("CANNOT", "never")
            raise ValueError("always fails")

        def slow(self, cmd: Any, ctx: cbus.Context) -> None:
            self._count("slow")
            time.sleep(cmd.seconds)
            ctx.conn.execute(
                "INSERT INTO effects (command_id, value) VALUES (%s, 1)", (ctx.command_id,)
            )

    return Handlers()


def effects(conn: psycopg.Connection[Any]) -> dict[uuid.UUID, int]:
    rows = conn.execute("SELECT command_id, count(*) FROM effects GROUP BY 1").fetchall()
    conn.commit()
    return {command_id: int(n) for command_id, n in rows}


def test_handler_writes_commit_only_with_completion(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    ok = [testbus.send_write_row(conn, value=i) for i in range(30)]
    bad = testbus.send_write_row(conn, value=99, fail_after_write=True)
    ok += [testbus.send_write_row(conn, value=i) for i in range(30, 60)]
    conn.commit()
    handlers = make_handlers(testbus)
    drain(dsn, [handlers])

    written = effects(conn)
    assert written == {r.command_id: 1 for r in ok}
    record = cbus.get_command(conn, "testbus", bad.command_id)
    assert record is not None
    assert record.status == "IN_TROUBLESHOOTING_QUEUE"
    assert record.attempts == 3
    assert record.last_error_type == "RuntimeError"
    assert record.last_error_message == "Attempts exhausted: failed after writing"
    assert handlers.calls["write_row"] == 60 + 3
    assert queue_depth(conn, QUEUE) == 0
    assert archive_depth(conn, QUEUE) == 1


def test_transient_failure_retries_with_backoff_then_completes(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    sent = testbus.send_flaky(conn, succeed_on=3)
    conn.commit()
    handlers = make_handlers(testbus)
    drain(dsn, [handlers])
    assert handlers.attempts == [1, 2, 3]
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None and record.status == "COMPLETED" and record.attempts == 3
    events = [
        row[0]
        for row in conn.execute(
            "SELECT event FROM cbus.audit WHERE command_id = %s ORDER BY id", (sent.command_id,)
        )
    ]
    assert events == ["failed", "retry_scheduled", "failed", "retry_scheduled"]


def test_per_command_max_attempts_is_honoured(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    # Reject declares max_attempts 2; the domain default is 3.
    sent = testbus.send_reject(conn, mode="exception")
    conn.commit()
    handlers = make_handlers(testbus)
    drain(dsn, [handlers])
    assert handlers.calls["reject"] == 2
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None
    assert (record.status, record.attempts, record.max_attempts) == (
        "IN_TROUBLESHOOTING_QUEUE",
        2,
        2,
    )


def test_permanent_error_goes_to_troubleshooting_at_once(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    sent = testbus.send_reject(conn, mode="permanent")
    conn.commit()
    handlers = make_handlers(testbus)
    drain(dsn, [handlers])
    assert handlers.calls["reject"] == 1
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None
    assert (record.status, record.last_error_code, record.last_error_message) == (
        "IN_TROUBLESHOOTING_QUEUE",
        "CANNOT",
        "never",
    )
    assert archive_depth(conn, QUEUE) == 1


def test_declared_business_error_fails_without_retry(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    declared = testbus.send_reject(conn, mode="declared")
    undeclared = testbus.send_reject(conn, mode="undeclared")
    conn.commit()
    handlers = make_handlers(testbus)
    drain(dsn, [handlers])
    assert handlers.calls["reject"] == 2
    record = cbus.get_command(conn, "testbus", declared.command_id)
    assert record is not None
    assert (record.status, record.last_error_code, record.last_error_message) == (
        "FAILED",
        "REJECTED",
        "no thanks",
    )
    assert record.finished_at is not None
    record = cbus.get_command(conn, "testbus", undeclared.command_id)
    assert record is not None
    assert record.status == "IN_TROUBLESHOOTING_QUEUE"
    assert record.last_error_code == "UNDECLARED_ERROR"
    assert record.last_error_message == (
        "Business error code `NOT_IN_SCHEMA` is not declared for `testbus.Reject` "
        "(declared: OVER_LIMIT, REJECTED): oops"
    )
    assert queue_depth(conn, QUEUE) == 0


def test_business_error_details_that_are_not_json_are_kept_as_their_repr(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "Opaque(7)"

    class Detailed(type(make_handlers(testbus))):  # type: ignore[misc]
        def reject(self, cmd: Any, ctx: cbus.Context) -> None:
            raise testbus.RejectError.rejected("no", details={"why": Opaque()})

    sent = testbus.send_reject(conn, mode="declared")
    conn.commit()
    drain(dsn, [Detailed()])
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None and record.status == "FAILED"
    assert record.last_error_details == "{'why': Opaque(7)}"


def _send_raw(conn: psycopg.Connection[Any], message: str, headers: str | None) -> None:
    conn.execute("SELECT pgmq.send('testbus__commands', %s::jsonb, %s::jsonb)", (message, headers))


def _headers(kind: str = "testbus.Echo", version: int = 1, **extra: Any) -> tuple[str, uuid.UUID]:
    command_id = uuid.uuid4()
    body = {
        "kind": kind,
        "version": version,
        "command_id": str(command_id),
        "correlation_id": str(uuid.uuid4()),
        **extra,
    }
    return msgspec.json.encode(body).decode(), command_id


def test_poison_messages_go_to_troubleshooting_and_the_rest_flows(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    good = [testbus.send_echo(conn, n=i) for i in range(20)]
    # Another domain's kind, and a version older than any the worker keeps: set
    # aside at once (an unknown kind of its own domain, or a newer version, waits
    # for a newer worker: tests/runtime/test_evolution.py).
    unknown_h, unknown = _headers(kind="other.Nope")
    _send_raw(conn, '{"n": 1}', unknown_h)
    version_h, old_version = _headers(version=0)
    _send_raw(conn, '{"n": 1}', version_h)
    undecodable_h, undecodable = _headers()
    _send_raw(conn, '{"n": "not a number"}', undecodable_h)
    _send_raw(conn, '{"n": 1}', None)  # no headers at all
    _send_raw(conn, '{"n": 1}', '{"kind": "testbus.Echo"}')  # headers missing ids
    _send_raw(conn, "[1, 2, 3]", _headers()[0])  # not an object
    good += [testbus.send_echo(conn, n=i) for i in range(20, 40)]
    conn.commit()

    handlers = make_handlers(testbus)
    drain(dsn, [handlers])

    assert handlers.calls["echo"] == 40
    for sent in good:
        assert cbus.get_command(conn, "testbus", sent.command_id).status == "COMPLETED"  # type: ignore[union-attr]
    assert queue_depth(conn, QUEUE) == 0
    assert archive_depth(conn, QUEUE) == 6

    def reason(command_id: uuid.UUID) -> tuple[str, str | None, str | None]:
        record = cbus.get_command(conn, "testbus", command_id)
        assert record is not None
        return record.status, record.last_error_code, record.last_error_message

    assert reason(unknown) == (
        "IN_TROUBLESHOOTING_QUEUE",
        "UNKNOWN_KIND",
        "Unknown kind `other.Nope` for domain `testbus`",
    )
    assert reason(old_version) == (
        "IN_TROUBLESHOOTING_QUEUE",
        "UNSUPPORTED_VERSION",
        "Unsupported version 0 of `testbus.Echo`: this worker handles versions 1 (keep "
        "version 0 under `previous` to run it)",
    )
    assert reason(undecodable) == (
        "IN_TROUBLESHOOTING_QUEUE",
        "UNDECODABLE",
        "Cannot decode `testbus.Echo`: Expected `int`, got `str` - at `$.n`",
    )
    # Every one is visible to an operator, those without a usable command_id too.
    page = cbus.list_troubleshooting(conn, domain="testbus")
    assert len(page.items) == 6
    codes = sorted(item.last_error_code or "" for item in page.items)
    assert codes == [
        "BAD_HEADERS",
        "BAD_HEADERS",
        "UNDECODABLE",
        "UNDECODABLE",
        "UNKNOWN_KIND",
        "UNSUPPORTED_VERSION",
    ]
    bad = [item for item in page.items if item.last_error_code == "BAD_HEADERS"]
    assert sorted(item.kind for item in bad) == ["testbus.Echo", "unknown"]


def test_foreign_headers_each_malformed_value_is_set_aside(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    """A valid command_id with one bad header beside it: BAD_HEADERS, never a silent drop."""
    bad_values: list[dict[str, Any]] = [
        {"correlation_id": "not-a-uuid"},
        {"correlation_id": 12},
        {"version": "1"},
        {"version": 1.5},
        {"version": -1},
        {"version": 10**12},
        {"kind": 5},
        {"batch_id": "not-a-uuid"},
        {"batch_id": 7},
    ]
    for change in bad_values:
        headers, _ = _headers()
        _send_raw(
            conn,
            '{"n": 1}',
            msgspec.json.encode({**msgspec.json.decode(headers), **change}).decode(),
        )
    # A command_id that is a JSON number of 32 digits: not a string, so not a UUID.
    headers, _ = _headers()
    numeric = {**msgspec.json.decode(headers), "command_id": 12345678901234567890123456789012}
    _send_raw(conn, '{"n": 1}', msgspec.json.encode(numeric).decode())
    good = [testbus.send_echo(conn, n=i) for i in range(5)]
    conn.commit()

    handlers = make_handlers(testbus)
    drain(dsn, [handlers])

    assert handlers.calls["echo"] == 5
    for sent in good:
        assert cbus.get_command(conn, "testbus", sent.command_id).status == "COMPLETED"  # type: ignore[union-attr]
    assert queue_depth(conn, QUEUE) == 0
    assert archive_depth(conn, QUEUE) == len(bad_values) + 1
    page = cbus.list_troubleshooting(conn, domain="testbus")
    assert [item.last_error_code for item in page.items] == ["BAD_HEADERS"] * (len(bad_values) + 1)


def test_a_consumer_whose_own_statement_fails_starts_again(
    dsn: str,
    conn: psycopg.Connection[Any],
    testbus: ModuleType,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker's own SQL fails once (a trigger): logged, the domain is retried."""
    conn.execute("CREATE SEQUENCE trip_seq")  # not transactional: trips exactly once
    conn.execute(
        "CREATE FUNCTION trip() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF nextval('trip_seq') = 1 THEN RAISE EXCEPTION 'tripped once'; END IF;"
        " RETURN NEW; END $$"
    )
    conn.execute(
        "CREATE TRIGGER trip BEFORE INSERT ON cbus.audit FOR EACH ROW EXECUTE FUNCTION trip()"
    )
    headers, unknown = _headers(kind="other.Nope")
    _send_raw(conn, '{"n": 1}', headers)
    good = [testbus.send_echo(conn, n=i) for i in range(10)]
    conn.commit()

    handlers = make_handlers(testbus)
    drain(dsn, [handlers], concurrency=1)

    assert handlers.calls["echo"] == 10
    for sent in good:
        assert cbus.get_command(conn, "testbus", sent.command_id).status == "COMPLETED"  # type: ignore[union-attr]
    record = cbus.get_command(conn, "testbus", unknown)
    assert record is not None and record.last_error_code == "UNKNOWN_KIND"
    assert queue_depth(conn, QUEUE) == 0
    failed = [r for r in caplog.records if getattr(r, "action", None) == "domain_failed"]
    assert len(failed) == 1 and "tripped once" in failed[0].getMessage()


def test_command_without_implementation_goes_to_troubleshooting(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    class OnlyEcho(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            return testbus.EchoResult(n=cmd.n, text="")

    echo = testbus.send_echo(conn, n=1)
    flaky = testbus.send_flaky(conn, succeed_on=1)
    conn.commit()
    drain(dsn, [OnlyEcho()])
    assert cbus.get_command(conn, "testbus", echo.command_id).status == "COMPLETED"  # type: ignore[union-attr]
    record = cbus.get_command(conn, "testbus", flaky.command_id)
    assert record is not None
    assert record.status == "IN_TROUBLESHOOTING_QUEUE"
    assert record.last_error_code == "NO_HANDLER"
    assert record.last_error_message == "No handler: OnlyEcho does not implement `flaky`"


def test_crash_looping_message_is_set_aside(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    sent = testbus.send_echo(conn, n=1)
    conn.commit()
    # Three deliveries that never ended, as if a worker died holding it each time.
    conn.execute(
        "UPDATE pgmq.q_testbus__commands SET read_ct = 3 WHERE msg_id = %s", (sent.msg_id,)
    )
    conn.commit()
    handlers = make_handlers(testbus)
    drain(dsn, [handlers])
    assert handlers.calls == {}
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None
    assert (record.status, record.last_error_code) == ("IN_TROUBLESHOOTING_QUEUE", "CRASH_LOOP")


def test_async_worker_runs_async_handlers(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    class AsyncHandlers(testbus.TestbusAsyncHandlers):  # type: ignore[misc, name-defined]
        async def write_row(self, cmd: Any, ctx: cbus.AsyncContext) -> None:
            await asyncio.sleep(0)
            await ctx.conn.execute(
                "INSERT INTO effects (command_id, value) VALUES (%s, %s)",
                (ctx.command_id, cmd.value),
            )
            if cmd.fail_after_write:
                raise RuntimeError("async failure")

    ok = [testbus.send_write_row(conn, value=i) for i in range(50)]
    bad = testbus.send_write_row(conn, value=-1, fail_after_write=True)
    conn.commit()
    drain(dsn, [AsyncHandlers()])
    assert effects(conn) == {r.command_id: 1 for r in ok}
    assert cbus.get_command(conn, "testbus", bad.command_id).status == "IN_TROUBLESHOOTING_QUEUE"  # type: ignore[union-attr]


def test_lease_is_renewed_while_a_long_handler_runs(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    # Slow's visibility timeout is 2 s; the handler takes 5 s. A second worker must
    # not get the message while the first is alive and working.
    sent = testbus.send_slow(conn, seconds=5.0)
    conn.commit()
    first, second = make_handlers(testbus), make_handlers(testbus)
    with running(dsn, [first], concurrency=1), running(dsn, [second], concurrency=1):
        wait_for(
            lambda: cbus.get_command(conn, "testbus", sent.command_id).status == "COMPLETED", 30
        )  # type: ignore[union-attr]
    assert first.calls.get("slow", 0) + second.calls.get("slow", 0) == 1
    assert effects(conn) == {sent.command_id: 1}


def test_worker_keeps_running_and_stops_gracefully(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    handlers = make_handlers(testbus)
    with running(dsn, [handlers], concurrency=2) as worker:
        for i in range(10):
            testbus.send_echo(conn, n=i)
            conn.commit()
        wait_for(lambda: statuses(conn, "testbus").get("COMPLETED") == 10)
        testbus.send_slow(conn, seconds=1.0)
        conn.commit()
        wait_for(lambda: handlers.calls.get("slow") == 1)
    # stop() came while Slow was in flight: it finished and was acknowledged.
    assert worker.completed == 11
    assert statuses(conn, "testbus") == {"COMPLETED": 11}


def test_notify_wakes_the_worker_without_waiting_for_the_poll(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    handlers = make_handlers(testbus)
    with running(dsn, [handlers], concurrency=1, poll_interval=30.0):
        time.sleep(0.5)  # the consumer is now waiting; only a notification can wake it
        testbus.send_echo(conn, n=1)
        conn.commit()
        wait_for(lambda: handlers.calls.get("echo") == 1, timeout=10)


@pytest.mark.parametrize(
    ("batch_size", "savepoints"), [(1, True), (7, True), (100, True), (7, False), (100, False)]
)
def test_mixed_batches_apply_each_effect_once(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, batch_size: int, savepoints: bool
) -> None:
    sent = []
    for i in range(80):
        sent.append((testbus.send_write_row(conn, value=i, fail_after_write=i % 9 == 0), i))
    conn.commit()
    drain(dsn, [make_handlers(testbus)], batch_size=batch_size, savepoints=savepoints)
    written = effects(conn)
    for result, i in sent:
        record = cbus.get_command(conn, "testbus", result.command_id)
        assert record is not None
        if i % 9 == 0:
            assert record.status == "IN_TROUBLESHOOTING_QUEUE"
            assert result.command_id not in written
        else:
            assert record.status == "COMPLETED"
            assert written[result.command_id] == 1


def _lease_left(dsn: str, command_id: uuid.UUID) -> float:
    with psycopg.connect(dsn) as other:
        row = other.execute(
            "SELECT extract(epoch FROM vt - clock_timestamp()) FROM pgmq.q_testbus__commands"
            " WHERE headers ->> 'command_id' = %s",
            (str(command_id),),
        ).fetchone()
    assert row is not None
    return float(row[0])


def test_handler_asks_for_more_time(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    seen: dict[str, float] = {}

    class Sync(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            seen["before"] = _lease_left(dsn, ctx.command_id)
            ctx.extend_lease(120)
            seen["after"] = _lease_left(dsn, ctx.command_id)
            return testbus.EchoResult(n=cmd.n, text="")

    class Async(testbus.TestbusAsyncHandlers):  # type: ignore[misc, name-defined]
        async def echo(self, cmd: Any, ctx: cbus.AsyncContext) -> Any:
            await ctx.extend_lease(90.5)
            seen["async"] = _lease_left(dsn, ctx.command_id)
            return testbus.EchoResult(n=cmd.n, text="")

    sent = testbus.send_echo(conn, n=1)
    conn.commit()
    drain(dsn, [Sync()])
    # The domain's visibility timeout is 5 s; the handler asked for 120 s, at once,
    # and a handler held that long shows as IN_PROGRESS meanwhile.
    assert seen["before"] <= 5
    assert 110 < seen["after"] <= 120
    assert cbus.get_command(conn, "testbus", sent.command_id).status == "COMPLETED"  # type: ignore[union-attr]
    testbus.send_echo(conn, n=2)
    conn.commit()
    drain(dsn, [Async()])
    assert 80 < seen["async"] <= 91


def test_acknowledged_batches_update_the_log_in_place(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    """Every log update of a drained batch stays on its page (HOT): no index grows.

    An acknowledgement updates every row of a page in one transaction, so the page
    must hold each row twice; a fillfactor too high for that, or an index on a
    column the worker updates, sends updates to other pages (ADR 0004).
    """
    for start in range(0, 300, 100):
        cbus.send_many(conn, [testbus.Echo(n=i, text="x") for i in range(start, start + 100)])
    conn.commit()
    drain(dsn, [make_handlers(testbus)], concurrency=1, batch_size=100)

    def counts() -> tuple[int, int]:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
            " WHERE schemaname = 'cbus' AND relname = 'command'"
        ).fetchone()
        conn.commit()
        assert row is not None
        return int(row[0]), int(row[1])

    # The worker's backends report their counters as they exit.
    wait_for(lambda: counts()[0] >= 300)
    assert statuses(conn, "testbus") == {"COMPLETED": 300}
    updated, hot = counts()
    assert hot == updated, (updated, hot)


def test_the_lease_records_last_read_at_as_pgmq_read_does(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    from cbus._worker_domain import DomainRuntime, read_query

    sent = testbus.send_echo(conn, n=1)
    conn.commit()
    runtime = DomainRuntime.of(make_handlers(testbus))
    rows = conn.execute(read_query(QUEUE, 10, True), runtime.read_params(False)).fetchall()
    assert [(r[0], r[1], r[4]) for r in rows] == [(sent.msg_id, 1, True)]
    row = conn.execute(
        f"SELECT read_ct, last_read_at IS NOT NULL, vt > clock_timestamp() FROM pgmq.q_{QUEUE}"
    ).fetchone()
    conn.commit()
    assert row == (1, True, True)


def test_a_queue_made_before_pgmq_1_10_is_served(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    """PGMQ added last_read_at to queue tables in 1.10; the lease leaves it out where absent."""
    conn.execute(f"ALTER TABLE pgmq.q_{QUEUE} DROP COLUMN last_read_at")
    sent = [testbus.send_echo(conn, n=i) for i in range(5)]
    conn.commit()
    drain(dsn, [make_handlers(testbus)])
    assert statuses(conn, "testbus") == {"COMPLETED": 5}
    assert queue_depth(conn, QUEUE) == 0
    found = cbus.get_command(conn, "testbus", sent[0].command_id)
    assert found is not None and found.result == {"n": 0, "text": ""}


def test_text_beyond_ascii_reaches_the_handler_as_sent(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    """The lease reads message and headers as the UTF-8 bytes of their JSON (binary rows)."""
    texts = ["Grüße aus Köln", "東京 🚀", 'a "quote", a \\ and \u00e9 spelt out', "x" * 5000]
    sent = [testbus.send_echo(conn, n=i, text=t) for i, t in enumerate(texts)]
    conn.commit()
    handlers = make_handlers(testbus)
    seen: list[str] = []
    echo = handlers.echo

    def spy(cmd: Any, ctx: cbus.Context) -> Any:
        seen.append(cmd.text)
        return echo(cmd, ctx)

    handlers.echo = spy
    drain(dsn, [handlers], concurrency=1)
    assert sorted(seen) == sorted(texts)
    for result, text in zip(sent, texts, strict=True):
        found = cbus.get_command(conn, "testbus", result.command_id)
        assert found is not None and found.result == {"n": texts.index(text), "text": text}


@pytest.mark.parametrize("raised", [SystemExit(3), KeyboardInterrupt()])
def test_a_handler_raising_a_base_exception_fails_its_command_alone(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, raised: BaseException
) -> None:
    """Not only Exception: the worker keeps running and the rest of the batch completes."""

    class Raising(type(make_handlers(testbus))):  # type: ignore[misc]
        def write_row(self, cmd: Any, ctx: cbus.Context) -> None:
            if cmd.value < 0:
                ctx.conn.execute(
                    "INSERT INTO effects (command_id, value) VALUES (%s, -1)", (ctx.command_id,)
                )
                raise raised
            super().write_row(cmd, ctx)

    before = [testbus.send_write_row(conn, value=i) for i in range(5)]
    bad = testbus.send_write_row(conn, value=-1)
    after = [testbus.send_write_row(conn, value=i) for i in range(5)]
    conn.commit()
    worker = drain(dsn, [Raising()], concurrency=1)
    assert effects(conn) == {r.command_id: 1 for r in before + after}
    record = cbus.get_command(conn, "testbus", bad.command_id)
    assert record is not None and record.status == "IN_TROUBLESHOOTING_QUEUE"
    assert record.attempts == 3 and record.last_error_type == type(raised).__name__
    assert worker.completed == 10


def test_an_async_handler_raising_cancelled_error_fails_its_command_alone(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    class AsyncHandlers(testbus.TestbusAsyncHandlers):  # type: ignore[misc, name-defined]
        async def echo(self, cmd: Any, ctx: cbus.AsyncContext) -> Any:
            if cmd.n < 0:
                raise asyncio.CancelledError()
            return testbus.EchoResult(n=cmd.n, text=cmd.text)

    ok = [testbus.send_echo(conn, n=i) for i in range(5)]
    bad = testbus.send_echo(conn, n=-1)
    conn.commit()
    worker = drain(dsn, [AsyncHandlers()], concurrency=1)
    assert statuses(conn, "testbus") == {"COMPLETED": 5, "IN_TROUBLESHOOTING_QUEUE": 1}
    record = cbus.get_command(conn, "testbus", bad.command_id)
    assert record is not None and record.last_error_type == "CancelledError"
    assert worker.completed == len(ok)


def test_handler_results_are_checked_against_the_schema(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    """A wrong result sets its command aside at once, not whoever reads it later."""

    class Results(type(make_handlers(testbus))):  # type: ignore[misc]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            return [
                testbus.EchoResult(n=0, text="ok"),
                {"n": 1, "text": "a dict"},
                None,
                testbus.EchoResult(n="three", text="x"),
            ][cmd.n]

        def write_row(self, cmd: Any, ctx: cbus.Context) -> Any:
            super().write_row(cmd, ctx)
            return "not declared"

    sent = [testbus.send_echo(conn, n=i) for i in range(4)]
    row = testbus.send_write_row(conn, value=7)
    conn.commit()
    drain(dsn, [Results()], concurrency=1)
    records = [cbus.get_command(conn, "testbus", s.command_id) for s in sent]
    assert records[0] is not None and records[0].status == "COMPLETED"
    assert records[0].result == {"n": 0, "text": "ok"}
    for record in records[1:]:
        assert record is not None and record.status == "IN_TROUBLESHOOTING_QUEUE", record
        assert record.result is None
        # A bug in the handler: no second attempt to repeat its outside effects.
        assert (record.attempts, record.last_error_code) == (1, "BAD_RESULT")
    messages = [r.last_error_message or "" for r in records[1:] if r is not None]
    assert "returned dict, expected EchoResult" in messages[0]
    assert "returned NoneType, expected EchoResult" in messages[1]
    assert "Invalid EchoResult" in messages[2]
    written = cbus.get_command(conn, "testbus", row.command_id)
    assert written is not None and written.status == "COMPLETED" and written.result is None


@pytest.mark.parametrize("misuse", ["commit", "rollback"])
def test_a_handler_that_ends_the_transaction_itself_goes_to_troubleshooting(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, misuse: str
) -> None:
    """It would do so on every attempt: no retries, and its write is not applied."""

    class Misusing(type(make_handlers(testbus))):  # type: ignore[misc]
        def write_row(self, cmd: Any, ctx: cbus.Context) -> None:
            super().write_row(cmd, ctx)
            if cmd.value < 0:
                getattr(ctx.conn, misuse)()

    ok = [testbus.send_write_row(conn, value=i) for i in range(4)]
    bad = testbus.send_write_row(conn, value=-1)
    conn.commit()
    drain(dsn, [Misusing()], concurrency=1)
    assert effects(conn) == {r.command_id: 1 for r in ok}
    record = cbus.get_command(conn, "testbus", bad.command_id)
    assert record is not None and record.status == "IN_TROUBLESHOOTING_QUEUE"
    assert record.attempts == 1 and record.last_error_code == "CONNECTION_MISUSE"
    assert f"must not {misuse.replace('rollback', 'roll back')} ctx.conn" in (
        record.last_error_message or ""
    )


class Overlap:
    """How many slow handlers ran at the same time, at most."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def run(self, seconds: float) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(seconds)
        with self.lock:
            self.now -= 1


def test_slow_handlers_run_on_every_consumer_even_with_a_short_backlog(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    """One consumer must not lease all eight and run them one after the other."""
    overlap = Overlap()

    class Slow(type(make_handlers(testbus))):  # type: ignore[misc]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            overlap.run(0.3)
            return testbus.EchoResult(n=cmd.n, text="")

    for i in range(8):
        testbus.send_echo(conn, n=i)
    conn.commit()
    drain(dsn, [Slow()], concurrency=4)
    assert statuses(conn, "testbus") == {"COMPLETED": 8}
    assert overlap.peak >= 3, overlap.peak


def test_the_lease_grows_for_quick_handlers_and_shrinks_for_slow_ones() -> None:
    from cbus._worker_domain import LeaseSize

    lease = LeaseSize(100)
    sizes = []
    for _ in range(9):
        sizes.append(lease.size)
        lease.record(lease.size, lease.size * 0.0001)  # 0.1 ms a message
    assert sizes == [1, 2, 4, 8, 16, 32, 64, 100, 100]
    lease.record(100, 100 * 0.01)  # 10 ms a message: 25 fit in 250 ms
    assert lease.size == 16
    lease.record(16, 16 * 2.0)  # two seconds each
    assert lease.size == 1
    assert LeaseSize(3).size == 1
    small = LeaseSize(3)
    small.record(1, 0.0)
    small.record(2, 0.0)
    assert small.size == 3


def test_a_full_lease_bounds_the_next_scan_and_a_rescan_drops_the_bound() -> None:
    from datetime import UTC, datetime, timedelta

    from cbus._worker_domain import LeaseSize

    lease = LeaseSize(100)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    # The lease's last column, `due_us`: microseconds since the epoch.
    epoch_us = (t0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    rows = [(i, epoch_us + i * 1_000_000 + 7) for i in (3, 1, 2)]
    assert lease.after(10.0) is None  # nothing learnt yet: the whole queue
    lease.leased(3, rows)
    # the earliest vt of the lease, to the microsecond
    assert lease.after(10.5) == t0 + timedelta(seconds=1, microseconds=7)
    assert lease.after(11.0) is None  # RESCAN s after the last whole scan
    assert lease.after(11.1) == t0 + timedelta(seconds=1, microseconds=7)
    lease.leased(4, rows)  # a short lease: the backlog is gone
    assert lease.after(11.2) is None
    lease.leased(3, rows)
    lease.forget()
    assert lease.after(11.3) is None


def test_a_full_lease_bounds_the_next_scan_at_its_earliest_vt_to_the_microsecond(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    """`due_us` comes back as an int; the bound made of it is the queue's own vt."""
    from cbus._worker_domain import DomainRuntime, LeaseSize, read_query

    runtime = DomainRuntime.of(make_handlers(testbus))
    for i in range(5):
        testbus.send_echo(conn, n=i)
    conn.commit()
    due = conn.execute(f"SELECT vt FROM pgmq.q_{QUEUE} ORDER BY vt LIMIT 3").fetchall()
    cur = conn.cursor(binary=True)  # as the worker reads it
    rows = cur.execute(read_query(QUEUE, 3, True), runtime.read_params(False)).fetchall()
    conn.commit()
    assert all(isinstance(r[-1], int) for r in rows)
    lease = LeaseSize(3)
    lease.leased(3, rows)
    assert lease.after(0.5) == due[0][0]
    assert isinstance(rows[0][2], bytes) and isinstance(rows[0][3], bytes)


def test_a_message_due_before_the_bound_is_leased_by_the_rescan(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    from datetime import timedelta

    from cbus._worker_domain import DomainRuntime, read_query

    runtime = DomainRuntime.of(make_handlers(testbus))
    later = [testbus.send_echo(conn, n=i) for i in range(3)]
    conn.commit()
    bound = conn.execute(f"SELECT min(vt) FROM pgmq.q_{QUEUE}").fetchone()
    assert bound is not None
    # Due at a moment already past, as a late commit lands: below the bound.
    early = testbus.send_echo(conn, n=9, delay=bound[0] - timedelta(seconds=5))
    conn.commit()
    read = read_query(QUEUE, 10, True)
    rows = conn.execute(read, runtime.read_params(False, bound[0])).fetchall()
    conn.commit()
    assert sorted(r[0] for r in rows) == sorted(s.msg_id for s in later)
    rows = conn.execute(read, runtime.read_params(False, None)).fetchall()
    conn.commit()
    assert [r[0] for r in rows] == [early.msg_id]


def test_a_misspelt_handler_method_is_named_at_start(
    dsn: str, testbus: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    class Typo(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def ecko(self, cmd: Any, ctx: cbus.Context) -> None:
            pass

        def helper(self) -> None:  # unlike any handler method: not named
            pass

    with caplog.at_level("WARNING", logger="cbus.worker"):
        cbus.Worker(dsn, [Typo()])
    [record] = [r for r in caplog.records if getattr(r, "action", "") == "handler_misspelt"]
    assert record.getMessage() == (
        "Typo.ecko handles no command; did you mean echo? Commands testbus.Echo have no "
        "handler and go to the troubleshooting queue"
    )


def _start_up_warnings(caplog: pytest.LogCaptureFixture, *methods: str) -> list[tuple[str, str]]:
    """The handler warnings a worker logs at start for a payments class with `methods`."""

    def not_run(self: Any, cmd: Any, ctx: cbus.Context) -> None:
        raise AssertionError("not run")

    payments = importlib.import_module("shop.payments")
    name = "Typo" if any(m.endswith("paymnet") for m in methods) else "P"
    cls = type(name, (payments.PaymentsHandlers,), dict.fromkeys(methods, not_run))
    with caplog.at_level("WARNING", logger="cbus.worker"):
        cbus.Worker("dbname=unused", [cls()])
    actions = ("handler_misspelt", "handler_missing")
    return [
        (r.action, r.getMessage())  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "action", "") in actions
    ]


def test_start_up_names_the_commands_a_handler_class_leaves_unhandled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Overriding one method of three: the other two are named, and the one overridden
    is never taken for a misspelling of another (authorize_ ~ capture_payment)."""
    assert _start_up_warnings(caplog, "authorize_payment") == [
        (
            "handler_missing",
            "P has no handler for payments.CapturePayment (capture_payment), "
            "payments.RefundPayment (refund_payment): these commands go to the "
            "troubleshooting queue",
        )
    ]


def test_start_up_warns_of_nothing_when_every_command_has_a_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    every = ("authorize_payment", "capture_payment", "refund_payment")
    # A helper named like a handler method is no typo when nothing is missing.
    assert _start_up_warnings(caplog, *every, "capture_payments") == []


def test_a_misspelt_method_is_named_once_and_the_rest_as_unhandled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert _start_up_warnings(caplog, "authorize_payment", "refund_paymnet") == [
        (
            "handler_misspelt",
            "Typo.refund_paymnet handles no command; did you mean refund_payment? Commands "
            "payments.RefundPayment have no handler and go to the troubleshooting queue",
        ),
        (
            "handler_missing",
            "Typo has no handler for payments.CapturePayment (capture_payment): these "
            "commands go to the troubleshooting queue",
        ),
    ]


def test_until_idle_returns_when_the_last_busy_consumer_ends_not_a_poll_later(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    """Consumers that found the queue empty while a sibling ran a handler waited a
    whole poll_interval before they checked again; the drain ended that much later."""
    testbus.send_slow(conn, seconds=0.3)
    conn.commit()
    started = time.monotonic()
    worker = drain(dsn, [make_handlers(testbus)], concurrency=4, poll_interval=20)
    assert worker.completed == 1
    assert time.monotonic() - started < 10  # not the poll_interval of 20 s


def test_a_context_outside_a_worker_has_no_lease_to_extend() -> None:
    """A handler's unit test builds its own Context; extend_lease is then a no-op."""
    ctx = cbus.Context(
        command_id=uuid.uuid4(),
        correlation_id=uuid.uuid4(),
        attempt=1,
        max_attempts=3,
        kind="testbus.Echo",
        domain="testbus",
        conn=None,  # type: ignore[arg-type]
    )
    ctx.extend_lease(30)


def test_slow_commands_after_a_lull_spread_over_consumers_again(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    """Quick work grew the lease to the batch size; the slow commands that follow an
    empty queue must not all go to one consumer."""
    overlap = Overlap()

    class Mixed(type(make_handlers(testbus))):  # type: ignore[misc]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            if cmd.n >= 1000:
                overlap.run(0.3)
            return testbus.EchoResult(n=cmd.n, text="")

    with running_worker(dsn, [Mixed()], concurrency=4) as worker:
        cbus.send_many(conn, [testbus.Echo(n=i) for i in range(600)])
        conn.commit()
        wait_for(lambda: worker.completed >= 600)
        time.sleep(0.3)  # a lull: the consumers find the queue empty
        for i in range(8):
            testbus.send_echo(conn, n=1000 + i)
        conn.commit()
        wait_for(lambda: worker.completed >= 608)
    assert overlap.peak >= 3, overlap.peak


def test_cancelling_an_async_worker_stops_all_its_tasks(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    class AsyncHandlers(testbus.TestbusAsyncHandlers):  # type: ignore[misc, name-defined]
        async def echo(self, cmd: Any, ctx: cbus.AsyncContext) -> Any:
            return testbus.EchoResult(n=cmd.n, text="")

    async def main() -> list[str]:
        worker = cbus.AsyncWorker(dsn, [AsyncHandlers()], concurrency=2, poll_interval=0.05)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(worker.run(), 1.0)
        await asyncio.sleep(0.3)
        return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("cbus-")]

    assert asyncio.run(main()) == []


@pytest.mark.parametrize("use_async", [False, True])
def test_the_first_consumer_runs_on_the_connection_that_checked_the_database(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, use_async: bool
) -> None:
    """A worker starts on the checks' connection: no second connect before work begins."""
    for i in range(3):
        testbus.send_echo(conn, n=i)
    conn.commit()
    seen: list[int] = []
    if use_async:

        class AsyncHandlers(testbus.TestbusAsyncHandlers):  # type: ignore[misc, name-defined]
            async def echo(self, cmd: Any, ctx: cbus.AsyncContext) -> Any:
                seen.append(ctx.conn.info.backend_pid)
                return testbus.EchoResult(n=cmd.n, text=cmd.text)

        worker = cbus.Worker(dsn, [AsyncHandlers()], concurrency=1, poll_interval=0.05)
        half: Any = worker._async
    else:

        class Handlers(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
            def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
                seen.append(ctx.conn.info.backend_pid)
                return testbus.EchoResult(n=cmd.n, text=cmd.text)

        worker = cbus.Worker(dsn, [Handlers()], concurrency=1, poll_interval=0.05)
        half = worker._sync
    checked: list[int] = []
    connects: list[int] = []
    check, connect = half._checked_connection, half._connect

    def spy(record: list[int], inner: Any) -> Any:
        if use_async:

            async def wrapped(*args: Any, **kwargs: Any) -> Any:
                found = await inner(*args, **kwargs)
                first = found[0] if isinstance(found, tuple) else found
                record.append(first.info.backend_pid)
                return found

            return wrapped

        def plain(*args: Any, **kwargs: Any) -> Any:
            found = inner(*args, **kwargs)
            first = found[0] if isinstance(found, tuple) else found
            record.append(first.info.backend_pid)
            return found

        return plain

    half._checked_connection = spy(checked, check)
    half._connect = spy(connects, connect)
    worker.run(until_idle=True)
    assert statuses(conn, "testbus") == {"COMPLETED": 3}
    assert len(checked) == 1 and set(seen) == {checked[0]}
    assert connects == checked  # the checks' own connect, and no other consumer connect
