"""A command's audit trail: what happened to it, in order, from `cbus.audit` and the log.

At the default audit level (`errors`) the worker writes no row on the happy path, to
keep it lean: a command sent and completed at the first attempt has no audit row at
all. `get_audit` therefore adds the events the command log already proves: `sent`
at `cbus.command.created_at`, and the end (`completed`, `failed`, `canceled`) at
`finished_at` when no audit row records it. Those events carry `synthetic=True`.

Reads only: nothing here commits or opens a savepoint.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ._queries import raw
from .errors import NotFoundError
from .names import as_uuid

__all__ = ["AuditEvent", "get_audit", "get_audit_async"]

T = TypeVar("T")
Rows: TypeAlias = list[dict[str, Any]]
# An I/O-free plan: yields (query, params), receives the rows, returns its value.
# `run` drives it on a Connection, `run_async` on an AsyncConnection.
Params: TypeAlias = dict[str, Any] | tuple[Any, ...]
Query: TypeAlias = str | sql.SQL | sql.Composed
Plan: TypeAlias = Generator[tuple[Query, Params], Rows, T]

# The end event each final status implies.
END_EVENTS = {"COMPLETED": "completed", "FAILED": "failed", "CANCELED": "canceled"}


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """One event in a command's life.

    `attempt` is the delivery (1-based) the event belongs to, `operator` the name of
    the person who acted (operator actions only), `detail` JSON data (the error for
    `failed`, the reason for operator actions). `synthetic` is true for events read
    from the command log rather than from an audit row.
    """

    event: str
    at: dt.datetime
    attempt: int | None = None
    operator: str | None = None
    detail: Any = None
    synthetic: bool = False

    __module__ = "cbus"


def audit_plan(domain: str, command_id: uuid.UUID) -> Plan[list[AuditEvent]]:
    params = {"domain": domain, "command_id": command_id}
    commands = yield raw("audit_command"), params
    rows = yield raw("audit_rows"), params
    if not commands and not rows:
        raise NotFoundError(f"No command {command_id} in domain `{domain}`")
    return merge(commands[0] if commands else None, rows)


def merge(command: dict[str, Any] | None, rows: Rows) -> list[AuditEvent]:
    """Audit rows in order, with the events the command log proves added where missing."""
    events = [AuditEvent(**row) for row in rows]
    if command is None:  # a poison message that never made it into the log
        return events
    recorded = {e.event for e in events}
    if "sent" not in recorded:
        events.insert(0, AuditEvent(event="sent", at=command["created_at"], synthetic=True))
    end = END_EVENTS.get(command["status"])
    if end is not None and command["finished_at"] is not None and end not in recorded:
        events.append(AuditEvent(event=end, at=command["finished_at"], synthetic=True))
    # Stable: audit rows keep their insertion order when two share a timestamp.
    events.sort(key=lambda e: e.at)
    return events


def run(conn: psycopg.Connection[Any], plan: Plan[T]) -> T:
    """Drive a plan on a connection."""
    rows: Rows | None = None
    try:
        while True:
            query, params = plan.send(rows)  # type: ignore[arg-type]
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(query, params)
                rows = cur.fetchall() if cur.description is not None else []
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(conn: psycopg.AsyncConnection[Any], plan: Plan[T]) -> T:
    """The async twin of `run`."""
    rows: Rows | None = None
    try:
        while True:
            query, params = plan.send(rows)  # type: ignore[arg-type]
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(query, params)
                rows = await cur.fetchall() if cur.description is not None else []
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def get_audit(
    conn: psycopg.Connection[Any], domain: str, command_id: uuid.UUID | str
) -> list[AuditEvent]:
    """The command's events, oldest first; raises `cbus.NotFoundError` for an unknown command."""
    return run(conn, audit_plan(domain, as_uuid(command_id)))


async def get_audit_async(
    conn: psycopg.AsyncConnection[Any], domain: str, command_id: uuid.UUID | str
) -> list[AuditEvent]:
    """The async twin of `get_audit`."""
    return await run_async(conn, audit_plan(domain, as_uuid(command_id)))
