"""Ordering keys and priorities (contract section 13, ADR 0011), on a real PostgreSQL.

The ordering run uses `cbus worker` processes (the handlers of
tests/ordering_handlers.py); the other tests run a worker in a thread.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest
from cbus import troubleshooting
from cbus.stats import domain_stats
from psycopg.conninfo import make_conninfo

from .helpers import drain, running, wait_for

ROOT = Path(__file__).resolve().parents[2]
CBUS = Path(sys.executable).with_name("cbus")


def _install(dsn: str, testbus: ModuleType, name: str) -> ModuleType:
    import importlib

    module = importlib.import_module(f"tbpkg.{name}")
    with psycopg.connect(dsn, autocommit=True) as c:
        module.install(c)
        c.execute(
            "CREATE TABLE IF NOT EXISTS public.steps (key text NOT NULL, seq int NOT NULL,"
            " attempt int NOT NULL, ok bool NOT NULL, pid int NOT NULL,"
            " started timestamptz NOT NULL, ended timestamptz NOT NULL)"
        )
    return module


@pytest.fixture
def ordered(dsn: str, testbus: ModuleType) -> ModuleType:
    return _install(dsn, testbus, "ordered")


@pytest.fixture
def ranked(dsn: str, testbus: ModuleType) -> ModuleType:
    return _install(dsn, testbus, "ranked")


def _headers(conn: psycopg.Connection[Any], table: str, msg_id: int) -> Any:
    row = conn.execute(
        psycopg.sql.SQL("SELECT headers FROM {} WHERE msg_id = %s").format(
            psycopg.sql.Identifier("pgmq", table)
        ),
        (msg_id,),
    ).fetchone()
    assert row is not None
    return row[0]


def test_the_key_and_the_priority_go_into_the_headers(
    conn: psycopg.Connection[Any], ordered: ModuleType, ranked: ModuleType
) -> None:
    step = ordered.send_step(conn, key="a", seq=1)
    many = cbus.send_many(conn, [ordered.Step(key="b", seq=1), ordered.Stop(key="b", seq=2)])
    chore = ranked.send_chore(conn, n=1)
    job = ranked.send_job(conn, n=1)
    urgent = ranked.send_job(conn, n=2, priority=9)
    conn.commit()
    q = "q_ordered__commands"
    assert _headers(conn, q, step.msg_id)["ordering_key"] == '"a"'
    assert [_headers(conn, q, s.msg_id)["ordering_key"] for s in many] == ['"b"', '"b"']
    assert "priority" not in _headers(conn, q, step.msg_id)
    r = "q_ranked__commands"
    assert _headers(conn, r, chore.msg_id)["priority"] == 1
    assert "priority" not in _headers(conn, r, job.msg_id)
    assert _headers(conn, r, urgent.msg_id)["priority"] == 9
    assert "ordering_key" not in _headers(conn, r, job.msg_id)


def test_indexes_only_where_a_domain_uses_the_options(
    conn: psycopg.Connection[Any], ordered: ModuleType, ranked: ModuleType
) -> None:
    rows = conn.execute(
        "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = 'pgmq'"
        " AND (indexname LIKE '%%cbus_key' OR indexname LIKE '%%cbus_prio') ORDER BY 1, 2"
    ).fetchall()
    assert rows == [
        ("a_ordered__commands", "a_ordered__commands_cbus_key"),
        ("q_ordered__commands", "q_ordered__commands_cbus_key"),
        ("q_ranked__commands", "q_ranked__commands_cbus_prio"),
    ]


class RankedHandlers:
    """Records the order commands ran in."""

    def __init__(self, ranked: ModuleType) -> None:
        base = ranked.RankedHandlers

        class _H(base):  # type: ignore[misc, valid-type]
            def job(self, cmd: Any, ctx: cbus.Context) -> None:
                ctx.conn.execute("INSERT INTO effects VALUES (%s, %s)", (ctx.command_id, cmd.n))

            def chore(self, cmd: Any, ctx: cbus.Context) -> None:
                ctx.conn.execute("INSERT INTO effects VALUES (%s, %s)", (ctx.command_id, -cmd.n))

        self.handlers = _H()


def test_higher_priorities_are_leased_first(dsn: str, ranked: ModuleType) -> None:
    with psycopg.connect(dsn) as conn:
        # The backlog: low-priority chores (1), then plain jobs (5) sent at 2.
        cbus.send_many(conn, [ranked.Chore(n=i) for i in range(1, 41)])
        cbus.send_many(conn, [ranked.Job(n=i) for i in range(1, 41)], priority=2)
        conn.commit()
        # Then the urgent ones, and a few at the default priority.
        cbus.send_many(conn, [ranked.Job(n=i) for i in range(101, 111)], priority=9)
        cbus.send_many(conn, [ranked.Job(n=i) for i in range(201, 206)])
        conn.commit()
    handlers = [RankedHandlers(ranked).handlers]
    with running(dsn, handlers, concurrency=1, batch_size=4), psycopg.connect(dsn) as conn:
        wait_for(lambda: conn.execute("SELECT count(*) FROM effects").fetchone() == (95,), 30)
        order = [v for (v,) in conn.execute("SELECT value FROM effects ORDER BY written_at")]
    assert sorted(order[:10]) == list(range(101, 111))
    assert sorted(order[10:15]) == list(range(201, 206))
    assert sorted(order[15:55]) == list(range(1, 41))
    assert sorted(order[55:]) == [-i for i in range(40, 0, -1)]
    # Within one priority, earliest-sent first.
    assert order[15:55] == list(range(1, 41))


KEYS = 20
PER_KEY = 100


def _workers(dsn: str, testbus: ModuleType, log_dir: Path, n: int, concurrency: int) -> list[Any]:
    generated = Path(testbus.__file__).parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(generated), str(ROOT), os.environ.get("PYTHONPATH")) if p
    )
    env["CBUS_ORDERING_DSN"] = dsn
    procs = []
    for i in range(n):
        log = open(log_dir / f"w{i}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(
            (
                subprocess.Popen(
                    [
                        str(CBUS),
                        "worker",
                        "tests.ordering_handlers:make_ordered",
                        "--dsn",
                        make_conninfo(dsn, application_name=f"w{i}"),
                        "--concurrency",
                        str(concurrency),
                        "--poll-interval",
                        "0.05",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    return procs


def _stop(procs: list[Any]) -> None:
    for proc, _ in procs:
        proc.terminate()
    for proc, log in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.mark.slow
def test_one_key_runs_one_at_a_time_in_send_order_across_workers(
    dsn: str, ordered: ModuleType, testbus: ModuleType, tmp_path: Path
) -> None:
    """2,000 commands over 20 keys, 2 worker processes of 4 consumers (8 in all),
    handlers sleeping 8-24 ms and failing one attempt in ten."""
    rng = random.Random(18)
    commands = [
        ordered.Step(key=f"k{k:02d}", seq=s, sleep_ms=rng.randint(8, 24), fail_rate=0.1)
        for s in range(PER_KEY)
        for k in rng.sample(range(KEYS), KEYS)
    ]
    with psycopg.connect(dsn) as conn:
        for at in range(0, len(commands), 250):
            cbus.send_many(conn, commands[at : at + 250])
            conn.commit()
    procs = _workers(dsn, testbus, tmp_path, 2, 4)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            wait_for(
                lambda: (
                    conn.execute("SELECT count(*) FROM steps WHERE ok").fetchone()
                    == (len(commands),)
                ),
                120,
            )
            rows = conn.execute(
                "SELECT key, seq, ok, started, ended FROM steps ORDER BY key, started"
            ).fetchall()
            statuses = dict(
                conn.execute(
                    "SELECT status, count(*) FROM cbus.command WHERE domain = 'ordered' GROUP BY 1"
                ).fetchall()
            )
    finally:
        _stop(procs)
    assert statuses == {"COMPLETED": len(commands)}
    by_key: dict[str, list[Any]] = defaultdict(list)
    for key, seq, ok, started, ended in rows:
        by_key[key].append((seq, ok, started, ended))
    failed = sum(1 for r in rows if not r[2])
    assert failed > 50  # retries happened, each holding its key
    for key, runs in by_key.items():
        # No two attempts of one key overlap...
        for before, after in itertools.pairwise(runs):
            assert after[2] >= before[3], (key, before, after)
        # ...and the key's commands start in send order, a retry before its successor.
        assert [seq for seq, ok, *_ in runs if ok] == list(range(PER_KEY)), key
        seqs = [seq for seq, *_ in runs]
        assert seqs == sorted(seqs), key
    # Different keys ran side by side (at most 8 at once: the consumers), so the run
    # took well under the time its attempts took one after the other.
    events = sorted([(r[3], 1) for r in rows] + [(r[4], -1) for r in rows])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    span = (max(r[4] for r in rows) - min(r[3] for r in rows)).total_seconds()
    serial = sum((r[4] - r[3]).total_seconds() for r in rows)
    assert 1 < peak <= 8, peak
    print(f"ordering run: {span:.1f} s for attempts of {serial:.1f} s, {peak} at once")
    assert span < serial * 0.75, (span, serial)


class StopHandlers:
    def __init__(self, ordered: ModuleType) -> None:
        class _H(ordered.OrderedHandlers):  # type: ignore[misc, name-defined]
            def step(self, cmd: Any, ctx: cbus.Context) -> None:
                ctx.conn.execute(
                    "INSERT INTO steps VALUES (%s, %s, %s, true, pg_backend_pid(),"
                    " clock_timestamp(), clock_timestamp())",
                    (cmd.key, cmd.seq, ctx.attempt),
                )

            def stop(self, cmd: Any, ctx: cbus.Context) -> None:
                if cmd.seq >= 0:
                    raise cbus.PermanentError("needs an operator")

        self.handlers = _H()


def _done(conn: psycopg.Connection[Any]) -> list[tuple[str, int]]:
    return conn.execute("SELECT key, seq FROM steps ORDER BY started, seq").fetchall()


@pytest.mark.parametrize("action", ["retry", "cancel", "complete"])
def test_the_troubleshooting_queue_holds_its_key_until_an_operator_acts(
    dsn: str, ordered: ModuleType, action: str
) -> None:
    with psycopg.connect(dsn) as conn:
        stop = ordered.send_stop(conn, key="x", seq=1)
        for seq in (2, 3):
            ordered.send_step(conn, key="x", seq=seq)
        ordered.send_step(conn, key="y", seq=1)
        conn.commit()
    handlers = StopHandlers(ordered).handlers
    with running(dsn, [handlers], concurrency=2), psycopg.connect(dsn, autocommit=True) as conn:
        wait_for(lambda: _done(conn) == [("y", 1)] and _tsq(conn) == 1)
        time.sleep(0.3)  # a few polls: x's successors stay where they are
        assert _done(conn) == [("y", 1)]
        (stats,) = domain_stats(conn, "ordered")
        assert stats.key_waiting == 2 and stats.troubleshooting == 1
        record = cbus.get_command(conn, "ordered", _command_id(conn, 2))
        assert (record.status, record.attempts) == ("PENDING", 0)
        if action == "retry":
            # The retried command goes first again: it fails again, and holds x again.
            troubleshooting.retry(conn, "ordered", stop.command_id, operator="test")
            wait_for(lambda: _tsq(conn) == 1 and _attempts(conn, stop.command_id) == 1)
            time.sleep(0.3)
            assert _done(conn) == [("y", 1)]
            troubleshooting.cancel(conn, "ordered", stop.command_id, operator="test")
        elif action == "cancel":
            troubleshooting.cancel(conn, "ordered", stop.command_id, operator="test")
        else:
            troubleshooting.complete(conn, "ordered", stop.command_id, operator="test", result=None)
        wait_for(lambda: len(_done(conn)) == 3)
        assert _done(conn) == [("y", 1), ("x", 2), ("x", 3)]
        (stats,) = domain_stats(conn, "ordered")
        assert stats.key_waiting == 0


def _tsq(conn: psycopg.Connection[Any]) -> int:
    return conn.execute(
        "SELECT count(*) FROM cbus.troubleshooting WHERE domain = 'ordered'"
    ).fetchone()[0]  # type: ignore[index]


def _attempts(conn: psycopg.Connection[Any], command_id: uuid.UUID) -> int:
    return conn.execute(
        "SELECT attempts FROM cbus.command WHERE domain = 'ordered' AND command_id = %s",
        (command_id,),
    ).fetchone()[0]  # type: ignore[index]


def _command_id(conn: psycopg.Connection[Any], seq: int) -> uuid.UUID:
    return conn.execute(
        "SELECT (headers ->> 'command_id')::uuid FROM pgmq.q_ordered__commands"
        " WHERE (message ->> 'seq')::int = %s",
        (seq,),
    ).fetchone()[0]  # type: ignore[index]


def test_run_until_idle_does_not_wait_for_a_key_held_by_troubleshooting(
    dsn: str, ordered: ModuleType
) -> None:
    with psycopg.connect(dsn) as conn:
        ordered.send_stop(conn, key="x", seq=1)
        held = ordered.send_step(conn, key="x", seq=2)
        ordered.send_step(conn, key="y", seq=1)
        conn.commit()
    drain(dsn, [StopHandlers(ordered).handlers])
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert _done(conn) == [("y", 1)]
        record = cbus.get_command(conn, "ordered", held.command_id)
        assert record is not None and (record.status, record.attempts) == ("PENDING", 0)


def test_key_text_by_scope_and_length() -> None:
    import dataclasses

    from cbus import _ordering
    from cbus.registry import CommandSpec, DomainSpec, Options

    @dataclasses.dataclass(frozen=True)
    class Cmd:
        account: str
        n: int

    domain_keyed = CommandSpec("kd", "A", 1, Cmd, "a", Options(ordering_key="account"))
    own_key = CommandSpec("kd", "B", 1, Cmd, "b", Options(ordering_key="n"))
    cbus.registry.register(
        DomainSpec("kd", (domain_keyed, own_key), options=Options(ordering_key="account"))
    )
    assert _ordering.key_of(domain_keyed, Cmd("x", 1)) == '"x"'
    assert _ordering.key_of(own_key, Cmd("x", 12)) == "kd.B:12"
    long = _ordering.key_of(domain_keyed, Cmd("y" * 300, 1))
    assert long is not None and long.startswith("sha256:") and len(long) == 71
    assert _ordering.lease_mode(DomainSpec("kd2", (domain_keyed,))) == "keyed"
    ranked = CommandSpec("kd3", "C", 1, Cmd, "c", Options(priority=7))
    assert _ordering.lease_mode(DomainSpec("kd3", (ranked,))) == "priority"
    plain = CommandSpec("kd4", "D", 1, Cmd, "d", Options())
    assert _ordering.lease_mode(DomainSpec("kd4", (plain,))) == "plain"
    assert _ordering.header_priority(ranked, None) == 7
    assert _ordering.header_priority(ranked, 5) is None


def test_a_declared_priority_of_5_leases_by_priority_and_no_declaration_does_not() -> None:
    """A schema opts into the priority lease by declaring `priority`, 5 included; the
    default of a schema that declares none keeps the plain lease (ADR 0011)."""
    from cbus import api
    from cbus._ordering import lease_mode

    def domain(name: str, options: api.Options) -> api.DomainSpec:
        spec = api.CommandSpec(
            domain=name, name="Ping", version=1, type=dict, handler_method="ping", options=options
        )
        return api.DomainSpec(name=name, commands=(spec,), options=options)

    assert api.Options().priority == 5
    assert lease_mode(domain("undeclared", api.Options())) == "plain"
    assert lease_mode(domain("declared", api.Options(priority=5))) == "priority"
    assert lease_mode(domain("lower", api.Options(priority=3))) == "priority"
