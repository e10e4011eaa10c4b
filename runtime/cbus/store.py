"""The command log as users read it: one record per command, from `cbus.command`."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, overload

import msgspec
import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import JsonbLoader

from ._queries import query
from .errors import (
    BusinessError,
    CommandCanceled,
    CommandInTroubleshooting,
    CommandNotCompleted,
)
from .names import IN_TROUBLESHOOTING, as_uuid, command_queue
from .records import CommandRecord, CommandStatus
from .wire import Reply

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    from .targets import (
        DjangoConnection,
        SQLAlchemyAsyncConnection,
        SQLAlchemyAsyncSession,
        SQLAlchemyConnection,
        SQLAlchemySession,
    )

ReadTarget: TypeAlias = (
    "psycopg.Connection[Any] | ConnectionPool[Any] | SQLAlchemySession | SQLAlchemyConnection"
    " | DjangoConnection"
)
"""What `get_command` reads through: a connection, or a sender's target but a Bus or context."""
AsyncReadTarget: TypeAlias = (
    "psycopg.AsyncConnection[Any] | AsyncConnectionPool[Any] | SQLAlchemyAsyncSession"
    " | SQLAlchemyAsyncConnection"
)

T = TypeVar("T")

__all__ = ["CommandRecord", "CommandStatus", "get_command", "get_command_async", "result_of"]


def get_command(conn: ReadTarget, domain: str, command_id: uuid.UUID | str) -> CommandRecord | None:
    """The command's record, or None when the domain never saw this command_id.

    `conn` is a psycopg connection, or one of the senders' targets but a Bus or a
    handler's context: a pool, a SQLAlchemy Session or Connection (read in its
    transaction), Django's connection.

    A PENDING command whose message a worker holds now reads IN_PROGRESS, even
    before the worker's heartbeat has written that to the log.
    """
    if not isinstance(conn, psycopg.Connection):
        from . import targets

        with targets.joined(conn) as joined:
            return get_command(joined, domain, command_id)
    params = {"domain": domain, "command_id": as_uuid(command_id)}
    with conn.cursor(row_factory=dict_row) as cur:
        _json_loaders(cur)
        cur.execute(query("get_command"), params)
        row = cur.fetchone()
        if row is None or not _may_be_leased(row):
            return _record(row)
        cur.execute(query("command_leased", command_queue(row["domain"])), _lease_params(row))
        leased = cur.fetchone()
        return _record(row, leased is not None and bool(leased["leased"]))


async def get_command_async(
    conn: AsyncReadTarget, domain: str, command_id: uuid.UUID | str
) -> CommandRecord | None:
    """The async twin of `get_command` (an AsyncConnectionPool, AsyncSession too)."""
    if not isinstance(conn, psycopg.AsyncConnection):
        from . import targets

        async with targets.joined_async(conn) as joined:
            return await get_command_async(joined, domain, command_id)
    params = {"domain": domain, "command_id": as_uuid(command_id)}
    async with conn.cursor(row_factory=dict_row) as cur:
        _json_loaders(cur)
        await cur.execute(query("get_command"), params)
        row = await cur.fetchone()
        if row is None or not _may_be_leased(row):
            return _record(row)
        await cur.execute(query("command_leased", command_queue(row["domain"])), _lease_params(row))
        leased = await cur.fetchone()
        return _record(row, leased is not None and bool(leased["leased"]))


def _json_loaders(cur: psycopg.abc.AdaptContext) -> None:
    """psycopg's own jsonb loader on this cursor: a framework's connection may load jsonb
    as text (Django's backend does, for its JSONField), and a record holds JSON data."""
    cur.adapters.register_loader("jsonb", JsonbLoader)


def _may_be_leased(row: DictRow) -> bool:
    return bool(row["status"] == "PENDING" and row["queued"])


def _lease_params(row: DictRow) -> dict[str, Any]:
    return {
        "msg_id": row["msg_id"],
        "command_id": str(row["command_id"]),
        "attempts": row["attempts"],
        "failed": row["last_error_type"] is not None,
    }


def _record(row: DictRow | None, leased: bool = False) -> CommandRecord | None:
    if row is None:
        return None
    del row["queued"]
    if leased:
        row["status"] = "IN_PROGRESS"
    return CommandRecord(**row)


_OUTCOME_OF_STATUS = {"COMPLETED": "SUCCESS", "FAILED": "FAILED", "CANCELED": "CANCELED"}


@overload
def result_of(
    source: CommandRecord | Reply,
    result_type: type[T],
    error_type: type[BusinessError] | None = None,
) -> T: ...


@overload
def result_of(
    source: CommandRecord | Reply,
    result_type: None,
    error_type: type[BusinessError] | None = None,
) -> None: ...


def result_of(
    source: CommandRecord | Reply,
    result_type: type[Any] | None,
    error_type: type[BusinessError] | None = None,
) -> Any:
    """The typed result of a command that completed, from its record or its reply.

    A declared business error is raised as `error_type` (the command's generated
    `<Command>Error`), a cancellation as `CommandCanceled`, the troubleshooting
    queue as `CommandInTroubleshooting`, a command still running as
    `CommandNotCompleted`.
    """
    outcome: str
    if isinstance(source, Reply):
        outcome, command_id = source.outcome, source.command_id
        code = source.error.code if source.error else ""
        message = source.error.message if source.error else ""
        details = source.error.details if source.error else None
        raw = source.result
    else:
        outcome = _OUTCOME_OF_STATUS.get(source.status, source.status)
        command_id = source.command_id
        code, message = source.last_error_code or "", source.last_error_message or ""
        details = source.last_error_details
        raw = source.result
    if outcome == "SUCCESS":
        if result_type is None or raw is None:
            return None
        return msgspec.convert(raw, result_type, strict=False)
    if outcome == "FAILED":
        exc = (error_type or BusinessError)(code, message, details)
        exc.command_id = command_id  # type: ignore[attr-defined]
        raise exc
    if outcome == "CANCELED":
        raise CommandCanceled(f"Command {command_id} was canceled: {message}", outcome, source)
    if outcome == IN_TROUBLESHOOTING:
        raise CommandInTroubleshooting(
            f"Command {command_id} is in the troubleshooting queue: {code}: {message}",
            outcome,
            source,
        )
    raise CommandNotCompleted(
        f"Command {command_id} has not ended (status {outcome})", outcome, source
    )
