"""The troubleshooting queue: commands the worker set aside, and what operators do with them.

A command lands here (status `IN_TROUBLESHOOTING_QUEUE`) when its attempts are
exhausted, its handler raised `PermanentError`, or its message could not run at all
(poison). Its message is kept in PGMQ's archive table `pgmq.a_<domain>__commands`,
found by the msg_id the command log stores. An operator then lists and inspects
these commands and, for each, decides one of three actions:

- `retry`: send the archived message again under the same command_id, with its
  attempts reset; the worker records it again on receipt and runs it as new;
- `cancel`: end it as CANCELED, with a reason;
- `complete`: end it as COMPLETED with a result the operator supplies.

Each action writes an audit row with the operator's name and reason. Cancel and
complete end the command as the worker would: in the same transaction they notify
`cbus.wait_for` callers, send the reply to `reply_to` (outcome CANCELED with the
reason, or SUCCESS with the operator's result) and complete the command's batch
when it was the last one open.

Transactions: every function runs in the caller's transaction, as a sender does.
With autocommit off, nothing is committed until the caller commits, and an action
that raises leaves the caller's transaction as it was (its own statements roll back
to a savepoint). With an autocommit connection (what `cbus tsq` uses), each call is
one transaction, committed when it returns.

Concurrency: an action changes the command with a conditional UPDATE
(`WHERE status = 'IN_TROUBLESHOOTING_QUEUE'`) before anything else, so of two
operators acting on one command at once, the second waits for the first's
transaction and then finds the command changed: it gets `cbus.ConcurrentOperationError`
naming who did what, and changes nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from ._tsq_plans import (
    VERBS,
    act_plan,
    check_operator,
    check_plan,
    list_plan,
    result_plan,
    show_plan,
)
from ._tsq_records import CommandDetail, TroubleshootingEntry, TroubleshootingPage
from .audit import run, run_async
from .errors import ConcurrentOperationError
from .names import as_uuid
from .outcomes import Ended, commands_ended
from .outcomes_async import Ended as AsyncEnded
from .outcomes_async import commands_ended_async

__all__ = [
    "CommandDetail",
    "TroubleshootingEntry",
    "TroubleshootingPage",
    "cancel",
    "cancel_async",
    "complete",
    "complete_async",
    "list_troubleshooting",
    "list_troubleshooting_async",
    "retry",
    "retry_async",
    "show_command",
    "show_command_async",
]


# -- list ------------------------------------------------------------------------


def list_troubleshooting(
    conn: psycopg.Connection[Any],
    *,
    domain: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    after: str | None = None,
    error_code: str | None = None,
) -> TroubleshootingPage:
    """A page of the commands in the troubleshooting queue, most recently set aside first.

    Parameters
    ----------
    domain, kind, error_code
        Keep only this domain, this kind (`orders.CreateOrder`, or `CreateOrder`
        for that command in any domain), or this last error code (`Poison`'s codes,
        a `PermanentError`'s code, ...).
    limit
        At most this many entries (1 to 1000).
    after
        The `next_cursor` of the previous page. Paging is by key, not offset: entries
        that leave the queue meanwhile never shift a page.
    """
    return run(conn, list_plan(domain, kind, limit, after, error_code))


async def list_troubleshooting_async(
    conn: psycopg.AsyncConnection[Any],
    *,
    domain: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    after: str | None = None,
    error_code: str | None = None,
) -> TroubleshootingPage:
    """The async twin of `list_troubleshooting`."""
    return await run_async(conn, list_plan(domain, kind, limit, after, error_code))


# -- show ------------------------------------------------------------------------


def show_command(
    conn: psycopg.Connection[Any], domain: str, command_id: uuid.UUID | str
) -> CommandDetail:
    """The command's record, PGMQ message and audit trail; `cbus.NotFoundError` if unknown."""
    return run(conn, show_plan(domain, as_uuid(command_id)))


async def show_command_async(
    conn: psycopg.AsyncConnection[Any], domain: str, command_id: uuid.UUID | str
) -> CommandDetail:
    """The async twin of `show_command`."""
    return await run_async(conn, show_plan(domain, as_uuid(command_id)))


# -- actions ---------------------------------------------------------------------


def _act(
    conn: psycopg.Connection[Any], domain: str, command_id: Any, event: str, **kw: Any
) -> None:
    cid = as_uuid(command_id)
    kw["operator"] = check_operator(kw["operator"])
    kind, version = run(conn, check_plan(domain, cid, event))
    if event == "completed":
        kw["result"] = run(conn, result_plan(kind, version, kw["result"]))
    try:
        with conn.transaction():
            ended = run(conn, act_plan(domain, cid, event, **kw))
            if ended is not None:
                commands_ended(conn, domain, [Ended(**ended)])
    except psycopg.errors.SerializationFailure as exc:  # REPEATABLE READ and up
        raise ConcurrentOperationError(
            f"Cannot {VERBS[event]} command {cid} in domain `{domain}`: it changed in a "
            f"concurrent transaction ({exc.sqlstate}); reload it and decide again"
        ) from exc


async def _act_async(
    conn: psycopg.AsyncConnection[Any], domain: str, command_id: Any, event: str, **kw: Any
) -> None:
    cid = as_uuid(command_id)
    kw["operator"] = check_operator(kw["operator"])
    kind, version = await run_async(conn, check_plan(domain, cid, event))
    if event == "completed":
        kw["result"] = await run_async(conn, result_plan(kind, version, kw["result"]))
    try:
        async with conn.transaction():
            ended = await run_async(conn, act_plan(domain, cid, event, **kw))
            if ended is not None:
                await commands_ended_async(conn, domain, [AsyncEnded(**ended)])
    except psycopg.errors.SerializationFailure as exc:
        raise ConcurrentOperationError(
            f"Cannot {VERBS[event]} command {cid} in domain `{domain}`: it changed in a "
            f"concurrent transaction ({exc.sqlstate}); reload it and decide again"
        ) from exc


def retry(
    conn: psycopg.Connection[Any],
    domain: str,
    command_id: uuid.UUID | str,
    *,
    operator: str,
    reason: str | None = None,
) -> None:
    """Send the command's archived message again, same command_id, attempts reset to 0.

    The command goes back to PENDING; the worker runs it as a new delivery (attempt 1
    of `max_attempts`). Its archived copy stays in the archive for the record.
    Raises `cbus.NotFoundError` for an unknown command or a purged message, and
    `cbus.ConcurrentOperationError` when the command is not (or no longer) in the
    troubleshooting queue.
    """
    _act(conn, domain, command_id, "retried", operator=operator, reason=reason)


async def retry_async(
    conn: psycopg.AsyncConnection[Any],
    domain: str,
    command_id: uuid.UUID | str,
    *,
    operator: str,
    reason: str | None = None,
) -> None:
    """The async twin of `retry`."""
    await _act_async(conn, domain, command_id, "retried", operator=operator, reason=reason)


def cancel(
    conn: psycopg.Connection[Any],
    domain: str,
    command_id: uuid.UUID | str,
    *,
    operator: str,
    reason: str | None = None,
) -> None:
    """End the command as CANCELED; it never runs again. Raises as `retry` does."""
    _act(conn, domain, command_id, "canceled", operator=operator, reason=reason)


async def cancel_async(
    conn: psycopg.AsyncConnection[Any],
    domain: str,
    command_id: uuid.UUID | str,
    *,
    operator: str,
    reason: str | None = None,
) -> None:
    """The async twin of `cancel`."""
    await _act_async(conn, domain, command_id, "canceled", operator=operator, reason=reason)


def complete(
    conn: psycopg.Connection[Any],
    domain: str,
    command_id: uuid.UUID | str,
    *,
    operator: str,
    result: Any,
    reason: str | None = None,
) -> None:
    """End the command as COMPLETED with `result` (JSON data, encoded as the worker does).

    `cbus.get_command(...).result` then returns it, and `result_as` decodes it into the
    command's result class. Raises as `retry` does, and `cbus.ValidationError` when
    the command's generated module is imported and the result does not fit its
    result class (or the command declares none).
    """
    _act(
        conn,
        domain,
        command_id,
        "completed",
        operator=operator,
        reason=reason,
        result=result,
    )


async def complete_async(
    conn: psycopg.AsyncConnection[Any],
    domain: str,
    command_id: uuid.UUID | str,
    *,
    operator: str,
    result: Any,
    reason: str | None = None,
) -> None:
    """The async twin of `complete`."""
    await _act_async(
        conn,
        domain,
        command_id,
        "completed",
        operator=operator,
        reason=reason,
        result=result,
    )
