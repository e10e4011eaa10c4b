"""What an idle worker and a burst of sends cost, counted by PostgreSQL (ADR 0010).

Counts, not times: the idle worker's transactions (pg_stat_database) are held to a
bound per poll interval elapsed, a generous one; the bound before ADR 0010 (every
consumer polling) was four times as many.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest
from cbus import _pruner, _wake, _worker_state, api

from .helpers import running, wait_for

DOMAINS = 30
CONCURRENCY = 4
POLL = 0.25


def _stub(self: Any, cmd: Any, ctx: Any) -> None:
    raise NotImplementedError


def _noop(self: Any, cmd: Any, ctx: Any) -> None:
    pass


def _many_domains(count: int) -> list[object]:
    """`count` domains of one no-op command each, registered now, and a handler for each."""
    handlers: list[object] = []
    for i in range(count):
        name = f"idle{i:02d}"
        command = dataclasses.make_dataclass("Tick", [("n", int, 0)], frozen=True, kw_only=True)
        options = api.Options(max_attempts=3, backoff=(1.0,), visibility_timeout=30)
        spec = api.CommandSpec(
            domain=name,
            name="Tick",
            version=1,
            type=command,
            handler_method="tick",
            options=options,
        )
        domain = api.register(api.DomainSpec(name=name, commands=(spec,), options=options))
        stub = type(
            f"Idle{i:02d}Handlers", (api.Handlers,), {"__cbus_domain__": domain, "tick": _stub}
        )
        handlers.append(type(f"Idle{i:02d}", (stub,), {"tick": _noop})())
    return handlers


def _transactions(dsn: str) -> int:
    """Transactions the database has counted (each connection adds its own two)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_an_idle_worker_with_30_domains_polls_once_per_interval_in_all(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The polls alone: the pruner's pass, once a minute, is counted by the next test.
    monkeypatch.setattr(_worker_state.WorkerState, "prune_interval", None)
    handlers = _many_domains(DOMAINS)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for h in handlers:
            cbus.install_domain(conn, h.__cbus_domain__)  # type: ignore[attr-defined]
        conn.execute("VACUUM ANALYZE")  # autovacuum's work on the new tables is not counted
    with running(dsn, handlers, concurrency=CONCURRENCY, poll_interval=POLL) as worker:
        wait_for(lambda: len(worker._sync._waiting) == CONCURRENCY)  # type: ignore[attr-defined]
        time.sleep(4 * POLL)  # past start-up (the listener's first wake-up)
        before = _transactions(dsn)
        began = time.monotonic()
        time.sleep(40 * POLL)
        after = _transactions(dsn)
        intervals = (time.monotonic() - began) / POLL
    counted = after - before - 2  # the first read's connection and statement
    # One probe of all 30 queues per interval, from one consumer. Every consumer
    # polling each domain was 120 per interval; every consumer probing, 4.
    assert counted <= 2 * intervals + 20, (counted, intervals)


def test_an_idle_pruner_pass_over_30_domains_costs_a_few_statements_each(dsn: str) -> None:
    """A worker prunes once a minute: with nothing due, its pass over 30 domains stays
    within a few statements per domain: about 3 a second over the minute."""
    handlers = _many_domains(DOMAINS)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for h in handlers:
            cbus.install_domain(conn, h.__cbus_domain__)  # type: ignore[attr-defined]
        conn.execute("VACUUM ANALYZE")
    time.sleep(1.5)  # backends report their counts at most once a second
    before = _transactions(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        pruned = _pruner.prune(conn, domains=[f"idle{i:02d}" for i in range(DOMAINS)])
    time.sleep(1.5)  # the pruner's backend has ended and reported its count
    counted = _transactions(dsn) - before - 2  # the counting connection's own
    assert pruned is not None and sum(p.total for p in pruned) == 0
    assert 0 < counted <= 8 * DOMAINS + 20, counted  # 187 seen here


def test_sends_in_a_burst_notify_a_few_times_and_all_run(
    dsn: str, testbus: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst from one process carries a few NOTIFYs, not one each; the worker runs all.

    The window is widened so the count does not depend on this machine's speed.
    """
    monkeypatch.setattr(_wake, "WINDOW", 0.2)
    seen: list[int] = []
    lock = threading.Lock()

    class Handlers(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: Any) -> Any:
            with lock:
                seen.append(cmd.n)
            return testbus.EchoResult(n=cmd.n, text="")

    notified: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN cbus_testbus")
        with running(dsn, [Handlers()], concurrency=2, poll_interval=30.0):
            time.sleep(0.5)  # idle now: only a notification or the linger can wake it
            with psycopg.connect(dsn, autocommit=True) as sender:
                for n in range(200):
                    testbus.send_echo(sender, n=n)
            wait_for(lambda: len(seen) == 200, timeout=20)
        notified = [n.channel for n in listener.notifies(timeout=0.5)]
    assert sorted(seen) == list(range(200))
    assert 1 <= len(notified) <= 100, len(notified)
