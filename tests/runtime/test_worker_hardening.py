"""Issue 11: nothing a handler raises, no failing domain and no signal can stop a worker."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest

from .helpers import drain, running, statuses, wait_for
from .test_chaos import fleet


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


def _deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


def _rejecting(testbus: ModuleType) -> Any:
    class Handlers(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            return testbus.EchoResult(n=cmd.n, text=cmd.text)

        def reject(self, cmd: Any, ctx: cbus.Context) -> None:
            if cmd.mode == "selfref":
                details: dict[str, Any] = {}
                details["me"] = details
                raise cbus.BusinessError("REJECTED", "refers to itself", details)
            if cmd.mode == "deep":
                raise cbus.BusinessError("REJECTED", "deep", _deep(5000))
            if cmd.mode == "badstr":
                raise _BadStr()
            raise ValueError("plain failure")

    return Handlers()


def test_whatever_a_handler_raises_is_a_recorded_failure(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    sent = {mode: testbus.send_reject(conn, mode=mode) for mode in ("selfref", "deep", "badstr")}
    echoes = [testbus.send_echo(conn, n=i) for i in range(3)]
    conn.commit()
    drain(dsn, [_rejecting(testbus)], concurrency=1)
    records = {m: cbus.get_command(conn, "testbus", s.command_id) for m, s in sent.items()}
    assert {m: r.status for m, r in records.items() if r is not None} == {
        "selfref": "FAILED",
        "deep": "FAILED",
        "badstr": "IN_TROUBLESHOOTING_QUEUE",
    }
    assert records["badstr"] is not None and records["badstr"].attempts == 2
    assert "str() failed" in (records["badstr"].last_error_message or "")
    row = conn.execute(
        "SELECT last_error_details FROM cbus.command WHERE command_id = %s",
        (sent["deep"].command_id,),
    ).fetchone()
    assert row is not None and isinstance(row[0], str) and row[0].startswith("[[")
    assert statuses(conn, "testbus").get("COMPLETED") == len(echoes)


def test_a_retried_exception_logs_its_traceback_once(
    dsn: str,
    conn: psycopg.Connection[Any],
    testbus: ModuleType,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent = testbus.send_reject(conn, mode="plain")  # max_attempts 2
    conn.commit()
    with caplog.at_level(logging.INFO, logger="cbus.worker"):
        drain(dsn, [_rejecting(testbus)], concurrency=1)
    mine = [r for r in caplog.records if getattr(r, "command_id", None) == str(sent.command_id)]
    assert [r.attempt for r in mine] == [1, 2]  # type: ignore[attr-defined]
    assert [r.exc_info is not None for r in mine] == [False, True]
    assert "ValueError: plain failure" in mine[0].getMessage()
    assert uuid.UUID(mine[1].command_id) == sent.command_id  # type: ignore[attr-defined]


def _echo_only(testbus: ModuleType) -> Any:
    class Handlers(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            return testbus.EchoResult(n=cmd.n, text=cmd.text)

    return Handlers()


def test_a_consumer_that_fails_is_restarted_with_a_log_line(
    dsn: str,
    conn: psycopg.Connection[Any],
    testbus: ModuleType,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cbus._consume as sync_worker

    real = sync_worker.triage
    calls = [0]

    def failing_twice(*args: Any) -> Any:
        calls[0] += 1
        if calls[0] <= 2:
            raise RecursionError("injected")
        return real(*args)

    monkeypatch.setattr(sync_worker, "triage", failing_twice)
    sent = [testbus.send_echo(conn, n=i) for i in range(5)]
    conn.commit()
    with caplog.at_level(logging.INFO, logger="cbus.worker"):
        drain(dsn, [_echo_only(testbus)], concurrency=1, batch_size=1)
    restarted = [r for r in caplog.records if getattr(r, "action", "") == "consumer_restarted"]
    assert len(restarted) == 2 and "RecursionError: injected" in restarted[0].getMessage()
    # The consumer's messages come back after their visibility timeout (5 s).
    assert statuses(conn, "testbus") == {"COMPLETED": len(sent)}


def test_a_worker_whose_consumers_cannot_run_raises(
    dsn: str,
    conn: psycopg.Connection[Any],
    testbus: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cbus._consume as sync_consume
    import cbus._worker as sync_worker

    def broken(*_: Any) -> Any:
        raise RecursionError("injected")

    monkeypatch.setattr(sync_consume, "triage", broken)
    monkeypatch.setattr(sync_worker.SyncWorker, "restart_backoff", (0.05, 0.4))
    monkeypatch.setattr(sync_worker.SyncWorker, "give_up_after", 4)
    for i in range(12):
        testbus.send_echo(conn, n=i)
    conn.commit()
    started = time.monotonic()
    with pytest.raises(cbus.WorkerFailed, match=r"4 failures in a row.*RecursionError"):
        cbus.Worker(dsn, [_echo_only(testbus)], concurrency=2, poll_interval=0.05).run()
    # 0.05 + 0.1 + 0.2: the backoff doubles although each restart connects fine.
    assert 0.3 < time.monotonic() - started < 10


def test_cbus_worker_whose_consumers_cannot_run_exits_non_zero(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, tmp_path: Path
) -> None:
    for i in range(12):
        testbus.send_echo(conn, n=i)
    conn.commit()
    with fleet(dsn, testbus, tmp_path) as workers:
        worker = workers.start("tests.chaos_handlers:make_broken", concurrency=2)
        rc, _ = worker.finish(60)
        log = worker.log()
    assert rc == 1, log
    assert "consumer_restarted" in log or "restarting in" in log
    assert "Error: A consumer cannot run (3 failures in a row)" in log


def _burst(proc: subprocess.Popen[bytes], sig: signal.Signals, count: int) -> None:
    for _ in range(count):
        proc.send_signal(sig)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_burst_of_signals_stops_an_idle_worker_at_once(
    dsn: str, testbus: ModuleType, tmp_path: Path, sig: signal.Signals
) -> None:
    with fleet(dsn, testbus, tmp_path) as workers:
        worker = workers.start("tests.chaos_handlers:make_testbus", concurrency=4)
        # The consumers and the listener are connected: the signal handlers are in place.
        wait_for(lambda: _connected(dsn, worker.name, 5), 20)
        worker.termed = time.monotonic()
        _burst(worker.proc, sig, 200)
        rc, elapsed = worker.finish(30)
    assert rc == 0, worker.log()
    assert elapsed < 5, worker.log()


def test_a_second_signal_stops_a_worker_whose_handlers_hang(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, tmp_path: Path
) -> None:
    testbus.send_slow(conn, seconds=600)
    conn.commit()
    with fleet(dsn, testbus, tmp_path) as workers:
        worker = workers.start("tests.chaos_handlers:make_testbus_short_grace", concurrency=1)
        wait_for(lambda: statuses(conn, "testbus").get("IN_PROGRESS") == 1, 20)
        worker.term()
        time.sleep(1)
        assert worker.alive()  # the first signal waits for the handler
        _burst(worker.proc, signal.SIGTERM, 50)
        rc, elapsed = worker.finish(30)
        log = worker.log()
    assert rc == 1, log
    assert 2.5 < elapsed < 10, log
    assert "Stopped by a second signal after 2 s" in log


def _connected(dsn: str, name: str, count: int) -> bool:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchone()
    return row is not None and row[0] >= count


def _two_domains(dsn: str, testbus: ModuleType) -> tuple[ModuleType, list[object], dict[str, int]]:
    leases = importlib.import_module("tbpkg.leases")
    with psycopg.connect(dsn, autocommit=True) as c:
        leases.install(c)
    calls: dict[str, int] = {}

    class Held(leases.LeasesHandlers):  # type: ignore[misc, name-defined]
        def hold(self, cmd: Any, ctx: cbus.Context) -> None:
            calls["hold"] = calls.get("hold", 0) + 1
            time.sleep(cmd.seconds)

    class Bus(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            calls["echo"] = calls.get("echo", 0) + 1
            return testbus.EchoResult(n=cmd.n, text=cmd.text)

        def slow(self, cmd: Any, ctx: cbus.Context) -> None:
            calls["slow"] = calls.get("slow", 0) + 1
            time.sleep(cmd.seconds)

    # The failing domain first: a consumer must not restart there and starve the other.
    return leases, [Held(), Bus()], calls


def _drop_queue(conn: psycopg.Connection[Any], queue: str) -> None:
    conn.execute("SELECT pgmq.drop_queue(%s)", (queue,))
    conn.commit()


def test_a_dropped_queue_leaves_the_other_domains_running(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    _, handlers, calls = _two_domains(dsn, testbus)
    with running(dsn, handlers, concurrency=1):
        time.sleep(0.3)
        _drop_queue(conn, "leases__commands")
        time.sleep(0.3)
        for i in range(5):
            testbus.send_echo(conn, n=i)
        conn.commit()
        wait_for(lambda: statuses(conn, "testbus").get("COMPLETED") == 5, 15)
    assert calls["echo"] == 5


def test_a_dropped_queue_costs_no_other_domain_its_leases(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    leases, handlers, calls = _two_domains(dsn, testbus)
    leases.send_hold(conn, seconds=2)
    testbus.send_slow(conn, seconds=7)  # visibility timeout 2 s: the heartbeat must renew
    conn.commit()
    with running(dsn, handlers, concurrency=3):
        wait_for(lambda: calls.get("hold") == 1 and calls.get("slow") == 1, 10)
        _drop_queue(conn, "leases__commands")  # under the heartbeat's feet
        wait_for(lambda: statuses(conn, "testbus").get("COMPLETED") == 1, 20)
    assert calls["slow"] == 1


def test_a_leaked_connection_cannot_write_after_its_handler_returned(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    go = threading.Event()
    refused: list[BaseException] = []
    threads: list[threading.Thread] = []

    def later(leaked: psycopg.Connection[Any], command_id: uuid.UUID) -> None:
        go.wait(20)
        try:
            leaked.execute("INSERT INTO effects (command_id, value) VALUES (%s, 7)", (command_id,))
        except BaseException as exc:
            refused.append(exc)

    class Leaky(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            thread = threading.Thread(target=later, args=(ctx.conn, ctx.command_id))
            thread.start()
            threads.append(thread)
            return testbus.EchoResult(n=cmd.n, text=cmd.text)

    sent = testbus.send_echo(conn, n=1)
    conn.commit()
    with running(dsn, [Leaky()], concurrency=1):
        wait_for(lambda: statuses(conn, "testbus").get("COMPLETED") == 1)
        go.set()
        threads[0].join(10)
    assert len(refused) == 1 and "CONNECTION_MISUSE" in repr(refused[0]), refused
    row = conn.execute(
        "SELECT count(*) FROM effects WHERE command_id = %s", (sent.command_id,)
    ).fetchone()
    assert row == (0,)


@pytest.fixture
def slow_times_out(testbus: ModuleType) -> Any:
    """testbus.Slow with `options: {timeout: 0.5}` (until cbgen emits the option)."""
    spec = cbus.registry.spec_for_kind("testbus.Slow")
    assert spec is not None
    before = spec.options
    object.__setattr__(spec, "options", dataclasses.replace(before, timeout=0.5))
    yield spec
    object.__setattr__(spec, "options", before)


def test_a_sync_handler_past_its_timeout_fails_its_attempt(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, slow_times_out: Any
) -> None:
    seen: list[tuple[int, bool, str]] = []

    class Hanging(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def slow(self, cmd: Any, ctx: cbus.Context) -> None:
            started = time.monotonic()
            while not ctx.timed_out and time.monotonic() - started < cmd.seconds:
                time.sleep(0.02)
            try:
                ctx.conn.execute(
                    "INSERT INTO effects (command_id, value) VALUES (%s, 1)", (ctx.command_id,)
                )
                refused = ""
            except cbus.PermanentError as exc:
                refused = exc.code
            seen.append((ctx.attempt, ctx.timed_out, refused))

    sent = testbus.send_slow(conn, seconds=8)  # visibility timeout 2 s, max_attempts 3
    conn.commit()
    started = time.monotonic()
    with running(dsn, [Hanging()], concurrency=3):
        wait_for(lambda: statuses(conn, "testbus").get("IN_TROUBLESHOOTING_QUEUE") == 1, 20)
        wait_for(lambda: len(seen) == 3, 10)
    assert time.monotonic() - started < 8  # three attempts of 0.5 s, not of 8 s
    assert sorted(seen) == [(1, True, "TIMED_OUT"), (2, True, "TIMED_OUT"), (3, True, "TIMED_OUT")]
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None and record.attempts == 3
    assert record.last_error_code == "TIMEOUT"
    assert "Timed out after 0.5 s" in (record.last_error_message or "")
    row = conn.execute("SELECT count(*) FROM effects").fetchone()
    assert row == (0,)


def test_an_async_handler_past_its_timeout_is_cancelled(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, slow_times_out: Any
) -> None:
    cancelled: list[int] = []

    class Hanging(testbus.TestbusAsyncHandlers):  # type: ignore[misc, name-defined]
        async def slow(self, cmd: Any, ctx: cbus.AsyncContext) -> None:
            try:
                await asyncio.sleep(cmd.seconds)
            except asyncio.CancelledError:
                cancelled.append(ctx.attempt)
                raise

    sent = testbus.send_slow(conn, seconds=30)
    conn.commit()
    with running(dsn, [Hanging()], concurrency=1):
        wait_for(lambda: statuses(conn, "testbus").get("IN_TROUBLESHOOTING_QUEUE") == 1, 15)
    assert cancelled == [1, 2, 3]
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None and record.last_error_code == "TIMEOUT"


def _commits(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_an_idle_worker_does_not_pay_per_domain(dsn: str, testbus: ModuleType) -> None:
    """Five domains, four consumers polling every 0.1 s: one probe per poll, not five reads."""
    stubs = [
        importlib.import_module(module).__dict__[name]
        for module, name in (
            ("tbpkg.testbus", "TestbusHandlers"),
            ("tbpkg.leases", "LeasesHandlers"),
            ("tbpkg.chaos", "ChaosHandlers"),
            ("shop.orders", "OrdersHandlers"),
            ("shop.payments", "PaymentsHandlers"),
        )
    ]
    with psycopg.connect(dsn, autocommit=True) as c:
        for module in ("tbpkg.leases", "tbpkg.chaos"):
            importlib.import_module(module).install(c)
    concurrency, poll, seconds = 4, 0.1, 4.0
    with running(dsn, [stub() for stub in stubs], concurrency=concurrency, poll_interval=poll):
        time.sleep(1.5)  # started, and the statistics of the start flushed
        before = _commits(dsn)
        time.sleep(seconds)
        rate = (_commits(dsn) - before) / seconds
    # One statement per consumer and poll is 40/s here; a read per domain was 200/s.
    assert rate < 2.5 * concurrency / poll, rate
