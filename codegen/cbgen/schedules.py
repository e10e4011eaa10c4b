"""`schedules:` in a schema file: cron schedules that send a command of the domain.

Read in two steps: `read_schedules` checks what one file says on its own (names, cron,
timezone, catch_up); `check_schedules` runs once types are resolved and checks the
command and its fields, which it turns into JSON-ready data for `ScheduleSpec`.
The cron is validated by cronsim (what the worker fires it with), five fields only.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import re
import uuid
import zoneinfo
from collections.abc import Collection, Sequence
from typing import Any

from cronsim import CronSim, CronSimError

from .checking import FileChecker
from .defs import ScheduleDef, Schema
from .load import Node
from .problems import Problems, hint
from .values import check_value

__all__ = ["SCHEDULE_KEYS", "check_schedules", "json_ready", "read_schedules"]

SCHEDULE_KEYS = ("cron", "timezone", "command", "fields", "catch_up")
SCHEDULE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
SCHEDULED_AT = "scheduled_at"


def _cron(checker: FileChecker, node: Node) -> str | None:
    text = checker.text(node, "`cron`")
    if text is None:
        return None
    parts = text.split()
    if len(parts) != 5:
        checker.err(
            node.mark,
            f"Invalid cron `{text}`: expected five fields (minute hour day month weekday), "
            f"got {len(parts)}",
        )
        return None
    expr = " ".join(parts)
    try:
        CronSim(expr, datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC))
    except CronSimError as exc:
        checker.err(node.mark, f"Invalid cron `{text}`: {str(exc).lower()}")
        return None
    return expr


def _timezone(checker: FileChecker, node: Node) -> str | None:
    text = checker.text(node, "`timezone`")
    if text is None:
        return None
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        h = hint(text, sorted(zoneinfo.available_timezones()))
        checker.err(
            node.mark,
            f"Unknown timezone `{text}`: expected an IANA name such as `Europe/Paris`{h}",
        )
        return None
    return text


def read_schedules(checker: FileChecker, node: Node | None) -> list[ScheduleDef]:
    """The schedules of one file, checked on their own; `checker` is a FileChecker."""
    m = checker.mapping(node, "`schedules`")
    if m is None:
        return []
    out: list[ScheduleDef] = []
    for key, value in m.items:
        name = key.text
        ok = True
        if not SCHEDULE_RE.match(name):
            checker.err(key.mark, f"Invalid schedule name `{name}`: expected ^[a-z][a-z0-9_]*$")
            ok = False
        s = checker.mapping(value, f"schedule `{name}`")
        if s is None:
            continue
        checker.keys(s, SCHEDULE_KEYS)
        cron = command = None
        for required in ("cron", "command"):
            if s.get(required) is None:
                checker.err(s.mark, f"Missing required key `{required}` in schedule `{name}`")
                ok = False
        crnode = s.get("cron")
        if crnode is not None:
            cron = _cron(checker, crnode)
        cnode = s.get("command")
        if cnode is not None:
            command = checker.text(cnode, "`command`")
        sched = ScheduleDef(
            name, key.mark, cron or "", command or "", cnode.mark if cnode else key.mark
        )
        tz = s.get("timezone")
        if tz is not None:
            zone = _timezone(checker, tz)
            ok = ok and zone is not None
            sched.timezone = zone or "UTC"
        cu = s.get("catch_up")
        if cu is not None:
            n = checker.integer(cu, "catch_up", 0)
            ok = ok and n is not None
            sched.catch_up = n if n is not None else 1
        fnode = s.get("fields")
        if fnode is not None:
            sched.fields_node = checker.mapping(fnode, f"the fields of schedule `{name}`")
            ok = ok and sched.fields_node is not None
        if ok and cron is not None and command is not None:
            out.append(sched)
    return out


def json_ready(value: Any) -> Any:
    """A checked value (see `values`) as the JSON its command's encoder would write."""
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def check_schedules(schemas: Sequence[Schema], resolved: Collection[int], p: Problems) -> None:
    """Check each schedule's command and fields; `resolved`: ids of resolved fields."""
    for s in schemas:
        commands = {c.name: c for c in s.commands}
        for sched in s.schedules:
            cmd = commands.get(sched.command)
            if cmd is None:
                h = hint(sched.command, commands)
                p.add(
                    sched.command_mark,
                    f"Unknown command `{sched.command}` in schedule `{sched.name}`: "
                    f"expected a command of domain `{s.domain}`{h}",
                )
                continue
            fields = {f.name: f for f in cmd.fields}
            at = fields.get(SCHEDULED_AT)
            if at is not None and at.type.base() != "datetime":
                p.add(
                    sched.command_mark,
                    f"Field `{SCHEDULED_AT}` of `{cmd.name}` is `{at.type}`: a schedule fills "
                    "it with its firing time, so it must be a `datetime`",
                )
            given = sched.fields_node.items if sched.fields_node is not None else []
            for k, n in given:
                f = fields.get(k.text)
                if f is None:
                    p.add(
                        k.mark,
                        f"Unknown field `{k.text}` of `{cmd.name}` in schedule `{sched.name}`"
                        + hint(k.text, fields),
                    )
                elif f.name == SCHEDULED_AT:
                    p.add(
                        k.mark,
                        f"`{SCHEDULED_AT}` is filled in at firing time: leave it out of "
                        f"schedule `{sched.name}`",
                    )
                elif id(f) in resolved:
                    good, value = check_value(f, n, p, f"in schedule `{sched.name}`")
                    if good:
                        sched.fields[f.name] = json_ready(value)
            named = {k.text for k, _ in given}
            missing = [
                f.name
                for f in cmd.fields
                if f.required and f.name not in named and f.name != SCHEDULED_AT
            ]
            if missing:
                where = sched.fields_node.mark if sched.fields_node is not None else sched.mark
                shown = ", ".join(f"`{m}`" for m in missing)
                p.add(
                    where,
                    f"Schedule `{sched.name}` misses required fields of `{cmd.name}`: {shown}",
                )
