"""Schedules: a worker fires the schema schedules of its domains (contract section 13).

Every worker runs a scheduler for its domains' schedules, each on a connection of its
own. A firing is sent holding the lock of its schedule's row in `cbus.schedule`
(`FOR UPDATE SKIP LOCKED`: one worker fires, the others skip and look again a second
later, no herd), in the transaction that records it as the schedule's `last_fired`;
its `command_id` is derived from the schedule and the firing time, so a firing sent
twice all the same (a row reset by hand) is a `DuplicateCommandError`, swallowed.
A new schedule's row records when it was first seen: nothing from before is sent.
A firing found more than `ON_TIME` seconds late was missed (no worker ran); of
those, the most recent `catch_up` are sent, oldest first. ADR 0012.

The clock is the worker host's (keep hosts in sync with NTP: a skewed clock moves a
firing by its skew, it never sends one twice). Tests run it faster through the
private `_CBUS_SCHEDULER_CLOCK` variable, `ORIGIN:ANCHOR:SPEED` in epoch seconds:
the scheduler's now is ORIGIN + (time.time() - ANCHOR) * SPEED.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import time
import uuid
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from cronsim import CronSim

from . import codec
from ._acompat import AEvent, monotonic
from ._queries import query
from .bus_async import send_async
from .errors import DuplicateCommandError
from .registry import CommandSpec, DomainSpec, ScheduleSpec

__all__ = [
    "ON_TIME",
    "Clock",
    "Scheduler",
    "command_id_of",
    "due_firings",
    "next_firing",
]

log = logging.getLogger("cbus.worker")

NAMESPACE = uuid.UUID("0b7f3f0e-8d52-4d0c-9a53-3c1f1d0a5c12")
ON_TIME = 30.0  # seconds: a firing found later than this was missed, and catch_up applies
LOOK_AT_MOST = 5.0  # seconds between looks at the schedules, at most (clock seconds)
RETRY = 1.0  # seconds: a schedule another worker fires is looked at again this soon
_KNOB = "_CBUS_SCHEDULER_CLOCK"
_TICK = dt.timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Clock:
    """What the scheduler calls now (aware UTC), and how fast it runs against real time."""

    now: Callable[[], dt.datetime]
    speed: float = 1.0

    @classmethod
    def default(cls) -> Clock:
        knob = os.environ.get(_KNOB)
        if not knob:
            return cls(lambda: dt.datetime.now(dt.UTC))
        origin, anchor, speed = (float(x) for x in knob.split(":"))
        return cls(
            lambda: dt.datetime.fromtimestamp(origin + (time.time() - anchor) * speed, dt.UTC),
            speed,
        )


def _field_names(type_: type[Any]) -> tuple[str, ...]:
    """A command type's field names as its JSON spells them (a dataclass or a Struct)."""
    names = getattr(type_, "__struct_encode_fields__", None)
    if names is None and dataclasses.is_dataclass(type_):
        names = tuple(f.name for f in dataclasses.fields(type_))
    return tuple(names or ())


def command_id_of(domain: str, name: str, firing: dt.datetime) -> uuid.UUID:
    """The command_id of a firing: the same for every worker that computes it."""
    return uuid.uuid5(NAMESPACE, f"{domain}.{name}@{firing.astimezone(dt.UTC).isoformat()}")


def next_firing(schedule: ScheduleSpec, after: dt.datetime) -> dt.datetime:
    """The first firing after `after` (aware UTC)."""
    local = after.astimezone(zoneinfo.ZoneInfo(schedule.timezone))
    for fired in CronSim(schedule.cron, local):
        if fired > after:
            return fired.astimezone(dt.UTC)
    raise ValueError(f"cron `{schedule.cron}` never fires")  # pragma: no cover


def due_firings(
    schedule: ScheduleSpec, since: dt.datetime, now: dt.datetime
) -> tuple[list[dt.datetime], dt.datetime | None]:
    """The firings to send at `now` (oldest first), and the newest one passed since `since`.

    Firings after `since` up to `now`: those at most `ON_TIME` seconds old are on time
    and all sent; of the older ones (missed) the most recent `catch_up` are.
    """
    # CronSim's reverse walk starts strictly before its start: from `now` itself, a
    # look at the very moment of a firing skipped it (and then waited for the next).
    local = (now + _TICK).astimezone(zoneinfo.ZoneInfo(schedule.timezone))
    on_time: list[dt.datetime] = []
    missed: list[dt.datetime] = []
    newest: dt.datetime | None = None
    for fired_local in CronSim(schedule.cron, local, reverse=True):
        fired = fired_local.astimezone(dt.UTC)
        if fired > now:
            continue
        if fired <= since:
            break
        newest = newest or fired
        if (now - fired).total_seconds() <= ON_TIME:
            on_time.append(fired)
        elif len(missed) < schedule.catch_up:
            missed.append(fired)
        else:
            break
    return sorted(on_time + missed), newest


class Scheduler:
    """The schedules of a worker's domains, fired on one connection of their own."""

    def __init__(
        self,
        dsn: str,
        domains: Sequence[DomainSpec],
        *,
        connect_kwargs: dict[str, Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._dsn = dsn
        self._connect_kwargs = connect_kwargs or {}
        self.clock = clock or Clock.default()
        self._schedules: list[tuple[DomainSpec, ScheduleSpec, CommandSpec]] = []
        for domain in domains:
            kinds = domain.by_kind()
            for schedule in domain.schedules:
                command = kinds.get(schedule.command)
                if command is None:
                    raise ValueError(
                        f"Schedule `{schedule.name}` of domain `{domain.name}` sends "
                        f"`{schedule.command}`, not a command of the domain"
                    )
                self._schedules.append((domain, schedule, command))
        self._look_at: dict[tuple[str, str], dt.datetime] = {}
        self.sent = 0  # firings this scheduler sent (duplicates not counted)
        self.duplicates = 0  # firings found sent already (their derived command_id taken)

    def __bool__(self) -> bool:
        return bool(self._schedules)

    async def run(self, stopping: AEvent) -> None:
        """Fire the schedules until `stopping` is set."""
        conn = await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, **self._connect_kwargs
        )
        async with conn:
            await self.seen(conn)
            while not stopping.is_set():
                wait = await self.look(conn)
                await stopping.wait_for(wait / self.clock.speed)

    async def seen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Record the schedules (first seen now when new; cron and timezone for stats)."""
        now = self.clock.now()
        for domain, schedule, _ in self._schedules:
            await conn.execute(
                query("schedule_seen"),
                {
                    "domain": domain.name,
                    "name": schedule.name,
                    "cron": schedule.cron,
                    "timezone": schedule.timezone,
                    "command": schedule.command,
                    "catch_up": schedule.catch_up,
                    "now": now,
                },
            )

    async def look(self, conn: psycopg.AsyncConnection[Any]) -> float:
        """Fire what is due now; the clock seconds until the next look."""
        now = self.clock.now()
        soonest = LOOK_AT_MOST
        for domain, schedule, command in self._schedules:
            key = (domain.name, schedule.name)
            at = self._look_at.get(key)
            if at is None or at <= now:
                fired = await self._fire(conn, domain, schedule, command, now)
                at = (
                    next_firing(schedule, now)
                    if fired
                    else now + dt.timedelta(seconds=RETRY * self.clock.speed)
                )
                self._look_at[key] = at
            soonest = min(soonest, (at - now).total_seconds())
        return max(soonest, 0.01 * self.clock.speed)

    async def _fire(
        self,
        conn: psycopg.AsyncConnection[Any],
        domain: DomainSpec,
        schedule: ScheduleSpec,
        command: CommandSpec,
        now: dt.datetime,
    ) -> bool:
        """Send the schedule's due firings under its row's lock; False: another worker holds it."""
        params = {"domain": domain.name, "name": schedule.name}
        started = monotonic()
        async with conn.transaction():
            cur = await conn.execute(query("schedule_lock"), params)
            row = await cur.fetchone()
            if row is None:
                return False  # another worker fires it now (or its row is gone: seen again)
            first_seen, last_fired = row
            since = max(first_seen, last_fired) if last_fired is not None else first_seen
            firings, newest = due_firings(schedule, since, now)
            for firing in firings:
                await self._send(conn, domain, schedule, command, firing)
            if newest is not None:
                await conn.execute(query("schedule_fired"), {**params, "fired": newest})
        if firings:
            log.info(
                "schedule %s.%s fired %d time(s) in %.3f s",
                domain.name,
                schedule.name,
                len(firings),
                monotonic() - started,
                extra={"action": "schedule_fired", "schedule": schedule.name},
            )
        return True

    async def _send(
        self,
        conn: psycopg.AsyncConnection[Any],
        domain: DomainSpec,
        schedule: ScheduleSpec,
        command: CommandSpec,
        firing: dt.datetime,
    ) -> None:
        data = dict(schedule.fields)
        if "scheduled_at" in _field_names(command.type):
            data["scheduled_at"] = firing.isoformat()
        value = codec.decode(codec.encode(data), command.type)
        try:
            await send_async(
                conn, value, command_id=command_id_of(domain.name, schedule.name, firing)
            )
        except DuplicateCommandError:
            log.debug("schedule %s: firing %s already sent", schedule.name, firing)
            self.duplicates += 1
            return
        self.sent += 1
