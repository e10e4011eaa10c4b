"""Schedules (contract section 13): each firing sent once, however many workers run.

The `paced` domain's schedule `every_minute` sends `Beat` every minute. Schedulers run
against a clock the test controls (`Clock`), or, in worker processes, against the
private `_CBUS_SCHEDULER_CLOCK` knob that runs their clock 60 times faster: three
scheduled minutes take three seconds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from cbus._scheduler import Clock, Scheduler, command_id_of, due_firings
from cbus.registry import DomainSpec, ScheduleSpec
from cbus.stats import domain_stats

from .helpers import wait_for
from .test_rate import Workers

UTC = dt.UTC
T0 = dt.datetime(2030, 1, 1, 12, 0, 10, tzinfo=UTC)  # first seen 10 s after a firing
CBUS = Path(sys.executable).with_name("cbus")


@pytest.fixture
def paced(testbus: ModuleType) -> ModuleType:
    return importlib.import_module("tbpkg.paced")


class FakeTime:
    """A clock the test moves; shared by every scheduler of a test."""

    def __init__(self, start: dt.datetime) -> None:
        self.at = start
        self.lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self.lock:
            return self.at

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.at += dt.timedelta(seconds=seconds)


def _domain(paced: ModuleType, **changes: Any) -> DomainSpec:
    spec: DomainSpec = paced.DOMAIN
    (schedule,) = spec.schedules
    return dataclasses.replace(spec, schedules=(dataclasses.replace(schedule, **changes),))


def _beats(dsn: str) -> list[dt.datetime]:
    """The scheduled_at of every Beat in the queue, in order."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT message ->> 'scheduled_at' FROM pgmq.q_paced__commands"
            " WHERE headers ->> 'kind' = 'paced.Beat' ORDER BY message ->> 'scheduled_at'"
        ).fetchall()
    return [dt.datetime.fromisoformat(r[0].replace("Z", "+00:00")) for r in rows]


def _minutes(*minutes: int) -> list[dt.datetime]:
    return [dt.datetime(2030, 1, 1, 12, m, tzinfo=UTC) for m in minutes]


def test_due_firings_on_time_missed_and_first_seen() -> None:
    every = ScheduleSpec("s", "* * * * *", "UTC", "paced.Beat", {}, catch_up=1)
    at = dt.datetime(2030, 1, 1, 12, 5, 2, tzinfo=UTC)
    # On time (2 s late): sent; nothing from before `since`.
    assert due_firings(every, at - dt.timedelta(seconds=30), at) == (_minutes(5), _minutes(5)[0])
    # After a gap: the on-time one and the most recent missed one (catch_up 1).
    assert due_firings(every, _minutes(0)[0], at) == (_minutes(4, 5), _minutes(5)[0])
    three = dataclasses.replace(every, catch_up=3)
    late = at + dt.timedelta(seconds=40)  # 12:05:42: 12:05 is missed too
    assert due_firings(three, _minutes(0)[0], late) == (_minutes(3, 4, 5), _minutes(5)[0])
    none = dataclasses.replace(every, catch_up=0)
    assert due_firings(none, _minutes(0)[0], late) == ([], _minutes(5)[0])
    # Looked at the very moment of a firing: it is due (CronSim's reverse walk starts
    # strictly before its start; this once skipped the firing, 1 run in 6 of the test
    # below, whose fake clock moves in whole seconds).
    sharp = _minutes(5)[0]
    assert due_firings(every, sharp - dt.timedelta(seconds=50), sharp) == ([sharp], sharp)
    # A timezone: 03:00 in Paris is 02:00 UTC in winter.
    paris = ScheduleSpec("p", "0 3 * * *", "Europe/Paris", "paced.Beat", {})
    noon = dt.datetime(2030, 1, 2, 2, 0, 5, tzinfo=UTC)
    assert due_firings(paris, noon - dt.timedelta(hours=1), noon)[0] == [
        dt.datetime(2030, 1, 2, 2, 0, tzinfo=UTC)
    ]


def test_command_ids_are_derived_from_the_schedule_and_the_firing() -> None:
    a = command_id_of("paced", "every_minute", _minutes(1)[0])
    assert a == command_id_of("paced", "every_minute", _minutes(1)[0].astimezone())
    assert a != command_id_of("paced", "every_minute", _minutes(2)[0])
    assert a != command_id_of("paced", "other", _minutes(1)[0])


def test_three_schedulers_fire_each_minute_exactly_once(dsn: str, paced: ModuleType) -> None:
    fake = FakeTime(T0)
    clock = Clock(fake.now)
    end = T0 + dt.timedelta(minutes=3)
    errors: list[BaseException] = []
    sent: list[int] = []
    duplicates: list[int] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        try:
            scheduler = Scheduler(dsn, [paced.DOMAIN], clock=clock)
            with psycopg.connect(dsn, autocommit=True) as conn:
                scheduler.seen(conn)
                barrier.wait()
                while fake.now() < end:
                    scheduler.look(conn)
                    time.sleep(0.001)
                scheduler.look(conn)
            sent.append(scheduler.sent)
            duplicates.append(scheduler.duplicates)
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    barrier.wait()
    while fake.now() < end:
        fake.advance(1)
        time.sleep(0.004)
    for t in threads:
        t.join(30)
    assert not errors, errors
    # 12:00 was before the schedule was first seen (12:00:10): not sent.
    assert _beats(dsn) == _minutes(1, 2, 3)
    assert sum(sent) == 3
    assert sum(duplicates) == 0  # the row lock kept the others off, not the derived ids
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT first_seen, last_fired FROM cbus.schedule WHERE name = 'every_minute'"
        ).fetchone()
    assert row == (T0, _minutes(3)[0])


def test_three_worker_processes_fire_exactly_once_per_minute(
    dsn: str, paced: ModuleType, testbus: ModuleType, tmp_path: Path
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE starts (kind text, key text, at timestamptz, command_id uuid UNIQUE)"
        )
    anchor = time.time()
    origin = T0.timestamp()  # the workers' clock: 12:00:10 now, 60 times faster
    fleet = Workers(
        dsn,
        Path(testbus.__file__).parent.parent,
        tmp_path,
        {"_CBUS_SCHEDULER_CLOCK": f"{origin}:{anchor}:60"},
    )
    try:
        for name in ("s1", "s2", "s3"):
            fleet.start(name, concurrency=1)

        def seen() -> dt.datetime | None:
            with psycopg.connect(dsn) as conn:
                row = conn.execute(
                    "SELECT first_seen FROM cbus.schedule WHERE name = 'every_minute'"
                ).fetchone()
            return None if row is None else row[0]

        wait_for(lambda: seen() is not None, timeout=30)
        first = seen()
        assert first is not None
        # Every worker has started (its scheduler too) before the minutes are counted.
        wait_for(lambda: _running(dsn, 3), timeout=30)
        begin = _fake_now(origin, anchor)
        time.sleep(4)  # four minutes of the workers' clock
        stop = _fake_now(origin, anchor)
        wait_for(lambda: _started_beats(dsn) >= len(_beats_between(first, stop)) - 1, timeout=20)
    finally:
        fleet.stop()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT key, count(*) FROM starts WHERE kind = 'Beat' GROUP BY key ORDER BY key"
        ).fetchall()
    firings = [dt.datetime.fromisoformat(k) for k, _ in rows]
    assert all(n == 1 for _, n in rows), rows  # each firing ran once
    assert len(firings) >= 3, (rows, first, begin, stop, fleet.logs())
    # Consecutive minutes from the first after first_seen: none skipped, none twice.
    assert firings == _beats_between(first, stop)[: len(firings)], (first, stop)


def _fake_now(origin: float, anchor: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(origin + (time.time() - anchor) * 60, UTC)


def _beats_between(after: dt.datetime, until: dt.datetime) -> list[dt.datetime]:
    first = after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    out = []
    while first <= until:
        out.append(first)
        first += dt.timedelta(minutes=1)
    return out


def _running(dsn: str, n: int) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT application_name) FROM pg_stat_activity"
            " WHERE application_name IN ('s1', 's2', 's3')"
        ).fetchone()
    return row is not None and row[0] >= n


def _started_beats(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM starts WHERE kind = 'Beat'").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize(("catch_up", "expected"), [(1, [10]), (3, [8, 9, 10]), (0, [])])
def test_catch_up_after_a_worker_free_gap(
    dsn: str, paced: ModuleType, catch_up: int, expected: list[int]
) -> None:
    fake = FakeTime(T0)
    domain = _domain(paced, catch_up=catch_up)
    with psycopg.connect(dsn, autocommit=True) as conn:
        first = Scheduler(dsn, [domain], clock=Clock(fake.now))
        first.seen(conn)
        first.look(conn)
        fake.advance(60)  # 12:01:10
        first.look(conn)
        assert _beats(dsn) == _minutes(1)
        # No worker from 12:01:10 to 12:10:40: a new one starts then.
        fake.advance(570)
        second = Scheduler(dsn, [domain], clock=Clock(fake.now))
        second.seen(conn)
        second.look(conn)
        assert _beats(dsn) == _minutes(1, *expected)
        # And on time again from there.
        fake.advance(30)  # 12:11:10
        second.look(conn)
        assert _beats(dsn) == _minutes(1, *expected, 11)


def test_a_firing_sent_twice_is_a_swallowed_duplicate(dsn: str, paced: ModuleType) -> None:
    fake = FakeTime(T0 + dt.timedelta(seconds=55))  # 12:01:05
    with psycopg.connect(dsn, autocommit=True) as conn:
        scheduler = Scheduler(dsn, [paced.DOMAIN], clock=Clock(fake.now))
        conn.execute(
            "INSERT INTO cbus.schedule VALUES ('paced', 'every_minute', '* * * * *', 'UTC',"
            " 'paced.Beat', 1, %s, NULL)",
            (T0,),
        )
        scheduler.look(conn)
        assert scheduler.sent == 1
        conn.execute("UPDATE cbus.schedule SET last_fired = NULL")  # forgotten by hand
        fresh = Scheduler(dsn, [paced.DOMAIN], clock=Clock(fake.now))
        fresh.look(conn)
        assert (fresh.sent, fresh.duplicates) == (0, 1)
    assert _beats(dsn) == _minutes(1)


def test_a_schedule_naming_no_command_of_its_domain_is_refused(paced: ModuleType) -> None:
    with pytest.raises(ValueError, match="not a command of the domain"):
        Scheduler("", [_domain(paced, command="paced.Nope")])


def test_stats_show_each_schedules_next_and_last_firing(dsn: str, paced: ModuleType) -> None:
    now = dt.datetime.now(UTC).replace(microsecond=0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        fake = FakeTime(now - dt.timedelta(minutes=3))
        scheduler = Scheduler(dsn, [paced.DOMAIN], clock=Clock(fake.now))
        scheduler.seen(conn)
        fake.advance(125)
        scheduler.look(conn)
        (found,) = domain_stats(conn, "paced")
    (schedule,) = found.schedules
    assert schedule.name == "every_minute" and schedule.command == "paced.Beat"
    assert schedule.last_firing is not None and schedule.next_firing is not None
    assert schedule.next_firing > schedule.last_firing
    assert schedule.next_firing > dt.datetime.now(UTC) - dt.timedelta(seconds=1)
    out = subprocess.run(
        [str(CBUS), "stats", "--dsn", dsn, "--domain", "paced", "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (shown,) = json.loads(out)
    assert [s["name"] for s in shown["schedules"]] == ["every_minute"]
    assert {"next_firing", "last_firing", "cron", "timezone"} <= set(shown["schedules"][0])
    table = subprocess.run(
        [str(CBUS), "stats", "--dsn", dsn, "--domain", "paced"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "SCHEDULE" in table and "every_minute" in table and "* * * * * UTC" in table


def test_the_async_scheduler_runs_until_stopped(dsn: str, paced: ModuleType) -> None:
    import asyncio

    from cbus._acompat import AEvent
    from cbus._scheduler_async import Scheduler as AsyncScheduler

    fake = FakeTime(T0 + dt.timedelta(seconds=49))  # 12:00:59

    async def main() -> int:
        stopping = AEvent()
        scheduler = AsyncScheduler(dsn, [paced.DOMAIN], clock=Clock(fake.now))
        task = asyncio.create_task(scheduler.run(stopping))
        await asyncio.sleep(0.5)  # seen at 12:00:59, next look at 12:01:00
        fake.advance(1.5)
        for _ in range(100):
            if scheduler.sent:
                break
            await asyncio.sleep(0.05)
        stopping.set()
        await asyncio.wait_for(task, 5)
        return scheduler.sent

    assert asyncio.run(main()) == 1
    assert _beats(dsn) == _minutes(1)
