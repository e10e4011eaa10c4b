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

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from . import codec
from ._command_types import check_result
from ._queries import raw
from .audit import AuditEvent, Plan, audit_plan, run, run_async
from .errors import CannotRetry, ConcurrentOperationError, NotFoundError, ValidationError
from .names import IN_TROUBLESHOOTING, as_uuid, command_queue, done_channel, send_channel
from .outcomes import Ended, commands_ended
from .outcomes_async import Ended as AsyncEnded
from .outcomes_async import commands_ended_async
from .pgmq import RawJson, archive_table, check_queue_name, queue_table
from .registry import spec_for_kind
from .store import CommandRecord

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

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class TroubleshootingEntry:
    """A command in the troubleshooting queue, as `list_troubleshooting` shows it."""

    domain: str
    command_id: uuid.UUID
    kind: str
    attempts: int
    max_attempts: int
    last_error_type: str | None
    last_error_code: str | None
    last_error_message: str | None
    updated_at: dt.datetime

    __module__ = "cbus"

    @property
    def cursor(self) -> str:
        """Pass as `after` to list the entries after this one.

        Shell-safe text: `<updated_at in microseconds since 1970>.<domain>.<command_id hex>`.
        """
        micros = (self.updated_at - _EPOCH) // dt.timedelta(microseconds=1)
        return f"{micros}.{self.domain}.{self.command_id.hex}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TroubleshootingPage:
    """One page of the troubleshooting queue, newest first.

    `next_cursor` is None on the last page; otherwise pass it as `after` for the next.
    """

    items: list[TroubleshootingEntry]
    next_cursor: str | None

    __module__ = "cbus"


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandDetail:
    """Everything known about one command: its log record, its message, its audit trail.

    `message` and `headers` are the PGMQ payload as JSON data, found in the queue
    table while the command waits or runs, and in the archive once it was set aside;
    `message_source` says which (`queue`, `archive`), and is None when the message is
    gone (deleted on completion, or purged from the archive).
    """

    record: CommandRecord
    msg_id: int | None
    message: Any
    headers: Any
    message_source: str | None
    audit: list[AuditEvent]

    __module__ = "cbus"


# -- list ------------------------------------------------------------------------


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str, uuid.UUID]:
    try:
        micros, domain, command_id = cursor.split(".")
        at = _EPOCH + dt.timedelta(microseconds=int(micros))
        return at, domain, uuid.UUID(hex=command_id)
    except (ValueError, OverflowError):
        raise ValueError(
            f"Invalid cursor {cursor!r}: pass the `next_cursor` of a previous page"
        ) from None


def _list_plan(
    domain: str | None,
    kind: str | None,
    limit: int,
    after: str | None,
    error_code: str | None = None,
) -> Plan[TroubleshootingPage]:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"Invalid limit {limit}: expected 1 to {MAX_LIMIT}")
    filters: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if domain is not None:
        filters.append(sql.SQL("domain = %(domain)s"))
        params["domain"] = domain
    if kind is not None:
        # `Echo` matches `<domain>.Echo` in any domain; `testbus.Echo` matches itself.
        if "." in kind:
            filters.append(sql.SQL("kind = %(kind)s"))
        else:
            filters.append(sql.SQL("kind = domain || '.' || %(kind)s"))
        params["kind"] = kind
    if error_code is not None:
        filters.append(sql.SQL("last_error_code = %(error_code)s"))
        params["error_code"] = error_code
    if after is not None:
        params["after_at"], params["after_domain"], params["after_id"] = _decode_cursor(after)
        filters.append(
            sql.SQL(
                "(updated_at, domain, command_id) < (%(after_at)s, %(after_domain)s, %(after_id)s)"
            )
        )
    where = sql.SQL("").join(sql.SQL("\n  AND ") + f for f in filters)
    text = sql.SQL(raw("tsq_list")).format(filters=where, limit=sql.Literal(limit + 1))
    rows = yield text, params
    items = [TroubleshootingEntry(**row) for row in rows[:limit]]
    return TroubleshootingPage(
        items=items, next_cursor=items[-1].cursor if len(rows) > limit else None
    )


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
    return run(conn, _list_plan(domain, kind, limit, after, error_code))


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
    return await run_async(conn, _list_plan(domain, kind, limit, after, error_code))


# -- show ------------------------------------------------------------------------


def _queue_of(domain: str) -> str:
    return check_queue_name(command_queue(domain))


def _message_plan(
    domain: str, command_id: uuid.UUID, msg_id: int | None, sources: tuple[str, ...]
) -> Plan[tuple[str, dict[str, Any]] | None]:
    """The command's PGMQ message from the given tables (`queue`, `archive`), in order."""
    queue = _queue_of(domain)
    tables = {"queue": queue_table(queue), "archive": archive_table(queue)}
    # A domain whose queue was never created (or was dropped) has no message to show.
    exists = yield raw("tsq_tables"), {"q": f"pgmq.q_{queue}", "a": f"pgmq.a_{queue}"}
    present = {"queue": exists[0]["q"], "archive": exists[0]["a"]}
    params: dict[str, Any]
    if msg_id is not None:
        text, params = raw("tsq_message_by_msg_id"), {"msg_id": msg_id}
    else:
        text, params = raw("tsq_message_by_header"), {"hex": command_id.hex}
    for source in sources:
        if present[source]:
            rows = yield sql.SQL(text).format(t=tables[source]), params
            if rows:
                return source, {
                    **rows[0],
                    "message": _json(rows[0]["message"]),
                    "headers": _json(rows[0]["headers"]),
                }
    return None


def _json(text: str | None) -> Any:
    """A stored payload as JSON data, or as its text when it breaks the wire format's limits.

    Nested deeper than Python's decoders go, it raised RecursionError in `tsq show`;
    as text an operator still sees what was sent.
    """
    if text is None:
        return None
    data = text.encode()
    if codec.shape_problem(data) is not None:
        return text
    return msgspec.json.decode(data)


def _show_plan(domain: str, command_id: uuid.UUID) -> Plan[CommandDetail]:
    rows = yield raw("command_by_id"), (domain, command_id)
    if not rows:
        raise NotFoundError(f"No command {command_id} in domain `{domain}`")
    record = CommandRecord(**rows[0])
    found = yield from _message_plan(domain, command_id, record.msg_id, ("queue", "archive"))
    audit = yield from audit_plan(domain, command_id)
    source, message = found if found is not None else (None, {})
    return CommandDetail(
        record=record,
        msg_id=message.get("msg_id"),
        message=message.get("message"),
        headers=message.get("headers"),
        message_source=source,
        audit=audit,
    )


def show_command(
    conn: psycopg.Connection[Any], domain: str, command_id: uuid.UUID | str
) -> CommandDetail:
    """The command's record, PGMQ message and audit trail; `cbus.NotFoundError` if unknown."""
    return run(conn, _show_plan(domain, as_uuid(command_id)))


async def show_command_async(
    conn: psycopg.AsyncConnection[Any], domain: str, command_id: uuid.UUID | str
) -> CommandDetail:
    """The async twin of `show_command`."""
    return await run_async(conn, _show_plan(domain, as_uuid(command_id)))


# -- actions ---------------------------------------------------------------------


_VERBS = {"retried": "retry", "canceled": "cancel", "completed": "complete"}


def _state_error(
    domain: str, command_id: uuid.UUID, event: str, row: dict[str, Any]
) -> ConcurrentOperationError:
    why = ""
    if row["operator"] is not None:
        why = f" ({row['event']} by {row['operator']} at {row['at'].isoformat()})"
    return ConcurrentOperationError(
        f"Cannot {_VERBS[event]} command {command_id} in domain `{domain}`: it is "
        f"{row['status']}, not {IN_TROUBLESHOOTING}{why}"
    )


def _check_plan(domain: str, command_id: uuid.UUID, event: str) -> Plan[tuple[str, int]]:
    """Before the action's savepoint: fail early, without a lock, when not in the queue.

    Returns the command's kind and version.
    """
    rows = yield raw("tsq_status"), {"domain": domain, "command_id": command_id}
    if not rows:
        raise NotFoundError(f"No command {command_id} in domain `{domain}`")
    if rows[0]["status"] != IN_TROUBLESHOOTING:
        raise _state_error(domain, command_id, event, rows[0])
    return str(rows[0]["kind"]), int(rows[0]["version"])


def _result_plan(kind: str, version: int, value: Any) -> Plan[RawJson]:
    """An operator's result, checked and encoded as the worker encodes a handler's.

    Checked against the command's result class when its generated module is imported
    in this process, else against the result schema `install_domain` recorded (no
    check for a command installed before cbus recorded schemas): a result no reader
    could decode would only fail later, in whoever reads it. No result (null) is
    always accepted: an operator may end a command without one.
    """
    spec = spec_for_kind(kind)
    if spec is None and value is not None:
        rows = yield raw("command_result_schema"), {"kind": kind, "version": version}
        if rows:
            check_result(kind, version, rows[0]["result_schema"], value)
    if spec is None or value is None:
        return RawJson(codec.encode(value))
    if spec.result_type is None:
        raise ValidationError(f"`{kind}` declares no result: complete it without one")
    try:
        checked = msgspec.convert(value, spec.result_type, strict=False)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"Invalid result for `{kind}`: {exc}") from None
    return RawJson(codec.encode(checked))


def _act_plan(
    domain: str,
    command_id: uuid.UUID,
    event: str,
    *,
    operator: str,
    reason: str | None,
    result: RawJson | None = None,
) -> Plan[dict[str, Any] | None]:
    """Inside the action's savepoint (or transaction): claim, act, audit.

    Returns, for a command that ended (canceled, completed) with a reply_to or a
    batch, the fields of its `Ended`, for the caller to send the reply and complete
    the batch.
    """
    key = {"domain": domain, "command_id": command_id}
    status = {"retried": "PENDING", "canceled": "CANCELED", "completed": "COMPLETED"}[event]
    claimed = yield raw("tsq_claim"), {**key, "status": status, "result": result}
    if not claimed:
        rows = yield raw("tsq_status"), key
        if not rows:  # deleted meanwhile
            raise NotFoundError(f"No command {command_id} in domain `{domain}`")
        raise _state_error(domain, command_id, event, rows[0])
    row = claimed[0]
    old_msg_id, attempts = row["msg_id"], row["attempts"]
    detail: dict[str, Any] = {"reason": reason}
    if event == "retried":
        found = yield from _message_plan(domain, command_id, old_msg_id, ("archive",))
        if found is None:
            raise NotFoundError(
                f"Cannot retry command {command_id} in domain `{domain}`: its message is no "
                f"longer in {archive_table(_queue_of(domain)).as_string()} (complete or "
                "cancel it instead)"
            )
        if not _carries(found[1]["headers"], command_id):
            raise CannotRetry(
                f"Cannot retry command {command_id} in domain `{domain}`: its message has no "
                "command_id header of its own (the id was given when it was set aside), so "
                "it would be set aside again under another id; cancel or complete it, and "
                "send a corrected message"
            )
        archived_msg_id = found[1]["msg_id"]
        sent = yield (
            sql.SQL(raw("tsq_resend")).format(
                a=archive_table(_queue_of(domain)), q=queue_table(_queue_of(domain))
            ),
            {
                "queue": _queue_of(domain),
                "channel": send_channel(domain),
                "msg_id": archived_msg_id,
            },
        )
        yield raw("tsq_reset"), key
        detail.update(archived_msg_id=archived_msg_id, msg_id=sent[0]["msg_id"])
    yield (
        raw("audit"),
        {
            **key,
            "event": event,
            "attempt": attempts,
            "operator": operator,
            "detail": RawJson(codec.encode(detail)),
        },
    )
    if event == "retried":
        return None
    yield raw("notify_done"), {"channel": done_channel(domain)}
    if row["reply_to"] is None and row["batch_id"] is None:
        return None
    canceled = event == "canceled"
    return {
        "command_id": command_id,
        "correlation_id": row["correlation_id"],
        "kind": row["kind"],
        "outcome": "CANCELED" if canceled else "SUCCESS",
        "reply_to": row["reply_to"],
        "batch_id": row["batch_id"],
        "result": None if canceled else result,
        "error_code": "CANCELED" if canceled else None,
        "error_message": (reason or "") if canceled else "",
    }


def _carries(headers: Any, command_id: uuid.UUID) -> bool:
    """Whether a message's headers name this command_id (the worker gave one if not)."""
    carried = headers.get("command_id") if isinstance(headers, dict) else None
    try:
        return isinstance(carried, str) and uuid.UUID(carried) == command_id
    except ValueError:
        return False


def _checked(operator: str) -> str:
    if not isinstance(operator, str) or not operator.strip():
        raise ValueError("An operator name is required: pass `operator=` (the CLI uses $USER)")
    return operator


def _act(
    conn: psycopg.Connection[Any], domain: str, command_id: Any, event: str, **kw: Any
) -> None:
    cid = as_uuid(command_id)
    kw["operator"] = _checked(kw["operator"])
    kind, version = run(conn, _check_plan(domain, cid, event))
    if event == "completed":
        kw["result"] = run(conn, _result_plan(kind, version, kw["result"]))
    try:
        with conn.transaction():
            ended = run(conn, _act_plan(domain, cid, event, **kw))
            if ended is not None:
                commands_ended(conn, domain, [Ended(**ended)])
    except psycopg.errors.SerializationFailure as exc:  # REPEATABLE READ and up
        raise ConcurrentOperationError(
            f"Cannot {_VERBS[event]} command {cid} in domain `{domain}`: it changed in a "
            f"concurrent transaction ({exc.sqlstate}); reload it and decide again"
        ) from exc


async def _act_async(
    conn: psycopg.AsyncConnection[Any], domain: str, command_id: Any, event: str, **kw: Any
) -> None:
    cid = as_uuid(command_id)
    kw["operator"] = _checked(kw["operator"])
    kind, version = await run_async(conn, _check_plan(domain, cid, event))
    if event == "completed":
        kw["result"] = await run_async(conn, _result_plan(kind, version, kw["result"]))
    try:
        async with conn.transaction():
            ended = await run_async(conn, _act_plan(domain, cid, event, **kw))
            if ended is not None:
                await commands_ended_async(conn, domain, [AsyncEnded(**ended)])
    except psycopg.errors.SerializationFailure as exc:
        raise ConcurrentOperationError(
            f"Cannot {_VERBS[event]} command {cid} in domain `{domain}`: it changed in a "
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
