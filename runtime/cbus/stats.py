"""Per-domain numbers for operators: `cbus stats` and the console's overview read these.

One statement reads every domain (a part per command queue, joined by UNION ALL),
after one that lists the queues PGMQ knows. Reads only: nothing here commits.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ._queries import raw
from .audit import Plan, run, run_async
from .names import QUEUE_SUFFIX, command_queue
from .pgmq import archive_table, check_queue_name, queue_table

__all__ = [
    "DomainStats",
    "ScheduleStats",
    "domain_names_async",
    "domain_stats",
    "domain_stats_async",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainStats:
    """One domain's queue and command log, now.

    `depth` is every message in its queue: `due` (may be leased now), `delayed`
    (sent with a delay, or waiting for the backoff after a failed attempt) and
    `in_flight` (leased by a worker). `oldest_due_age` is in seconds, 0 when nothing
    is due. `troubleshooting` counts the commands in the troubleshooting queue;
    `completed_*` and `failed_*` the commands that ended so in the last minute / hour;
    `waiting_for_newer` the commands whose message waits for a newer worker (a newer
    version or an unknown kind during a deploy, contract section 8; they read PENDING,
    `get_command` says why).
    `key_waiting` counts the messages (among `due` or `delayed`) held back because an
    earlier command of their `ordering_key` is in the troubleshooting queue.
    """

    domain: str
    depth: int
    due: int
    delayed: int
    in_flight: int
    oldest_due_age: float
    troubleshooting: int
    completed_1m: int
    failed_1m: int
    completed_1h: int
    failed_1h: int
    waiting_for_newer: int
    key_waiting: int = 0
    schedules: tuple[ScheduleStats, ...] = ()
    """The domain's schedules a worker has seen (rate: ADR 0012)."""

    __module__ = "cbus"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleStats:  # ==== rate ====
    """One schedule, as workers recorded it: its next firing from now, the last one sent."""

    name: str
    command: str
    cron: str
    timezone: str
    catch_up: int
    first_seen: dt.datetime
    next_firing: dt.datetime | None
    last_firing: dt.datetime | None

    __module__ = "cbus"


def _stats_plan(domain: str | None) -> Plan[list[DomainStats]]:
    if domain is not None:
        check_queue_name(command_queue(domain))
    names = yield from _names_plan()
    if domain is not None:
        names = [n for n in names if n == domain]
    if not names:
        return []
    part = sql.SQL(raw("stats_queue"))
    queues = sql.SQL("\nUNION ALL\n").join(
        part.format(domain=sql.Literal(n), q=queue_table(check_queue_name(command_queue(n))))
        for n in names
    )
    found = yield sql.SQL(raw("stats")).format(queues=queues), {}
    # rate: the schedules, when the schema has their table (version 6 on)
    present = yield raw("stats_schedules_present"), {}
    schedules = (yield raw("stats_schedules"), {"domain": domain}) if present[0]["ok"] else []
    by_domain: dict[str, list[ScheduleStats]] = {}
    now = dt.datetime.now(dt.UTC)
    for row in schedules:
        by_domain.setdefault(row["domain"], []).append(_schedule_stats(row, now))
    waiting = yield from _key_waiting_plan(names)
    return [
        DomainStats(
            **row,
            key_waiting=waiting.get(row["domain"], 0),
            schedules=tuple(by_domain.get(row["domain"], ())),
        )
        for row in found
    ]


def _schedule_stats(row: dict[str, Any], now: dt.datetime) -> ScheduleStats:
    from cronsim import CronSim, CronSimError

    after = max(now, row["last_fired"] or now)
    try:
        local = after.astimezone(zoneinfo.ZoneInfo(row["timezone"]))
        upcoming: dt.datetime | None = next(CronSim(row["cron"], local)).astimezone(dt.UTC)
    except (CronSimError, StopIteration, ValueError, zoneinfo.ZoneInfoNotFoundError):
        upcoming = None  # recorded by a worker of another cbus: shown without it
    return ScheduleStats(
        name=row["name"],
        command=row["command"],
        cron=row["cron"],
        timezone=row["timezone"],
        catch_up=row["catch_up"],
        first_seen=row["first_seen"],
        next_firing=upcoming,
        last_firing=row["last_fired"],
    )


def _key_waiting_plan(names: list[str]) -> Plan[dict[str, int]]:
    """How many messages wait for a command of their key in troubleshooting (ADR 0011)."""
    part = sql.SQL(raw("stats_key_waiting"))
    parts = sql.SQL("\nUNION ALL\n").join(
        part.format(
            domain=sql.Literal(n),
            q=queue_table(command_queue(n)),
            a=archive_table(command_queue(n)),
        )
        for n in names
    )
    rows = yield parts, {}
    return {r["domain"]: r["key_waiting"] for r in rows}


def domain_stats(conn: psycopg.Connection[Any], domain: str | None = None) -> list[DomainStats]:
    """Every domain's numbers (or only `domain`'s), sorted by domain name.

    A domain is one whose command queue exists (`cbus db install --domains`, or a
    worker's start); a name with no queue gives an empty list.
    """
    return run(conn, _stats_plan(domain))


async def domain_stats_async(
    conn: psycopg.AsyncConnection[Any], domain: str | None = None
) -> list[DomainStats]:
    """The async twin of `domain_stats`."""
    return await run_async(conn, _stats_plan(domain))


TABLE_HEADERS = [
    "DOMAIN",
    "DEPTH",
    "DUE",
    "DELAYED",
    "IN_FLIGHT",
    "OLDEST_DUE",
    "TROUBLESHOOTING",
    "DONE/1M",
    "FAILED/1M",
    "DONE/1H",
    "FAILED/1H",
    "WAITING_NEWER",
    "KEY_WAITING",
]


SCHEDULE_HEADERS = ["DOMAIN", "SCHEDULE", "COMMAND", "CRON", "NEXT", "LAST"]


def schedule_rows(found: list[DomainStats]) -> list[list[str]]:
    """The rows of `cbus stats`'s schedule table, in the order of `SCHEDULE_HEADERS`."""

    def when(at: dt.datetime | None) -> str:
        return "-" if at is None else at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return [
        [
            d.domain,
            s.name,
            s.command,
            f"{s.cron} {s.timezone}",
            when(s.next_firing),
            when(s.last_firing),
        ]
        for d in found
        for s in d.schedules
    ]


def age(seconds: float) -> str:
    """An age as an operator reads it: `0s`, `42s`, `3m05s`, `2h07m`."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def table_rows(found: list[DomainStats]) -> list[list[str]]:
    """The rows of `cbus stats`'s table, in the order of `TABLE_HEADERS`."""
    return [
        [
            d.domain,
            str(d.depth),
            str(d.due),
            str(d.delayed),
            str(d.in_flight),
            age(d.oldest_due_age),
            str(d.troubleshooting),
            str(d.completed_1m),
            str(d.failed_1m),
            str(d.completed_1h),
            str(d.failed_1h),
            str(d.waiting_for_newer),
            str(d.key_waiting),
        ]
        for d in found
    ]


def _names_plan() -> Plan[list[str]]:
    rows = yield raw("stats_queues"), {}
    return [r["queue_name"][: -len(QUEUE_SUFFIX)] for r in rows]


async def domain_names_async(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """The domains whose command queue exists, by name."""
    return await run_async(conn, _names_plan())
