"""The troubleshooting queue's operations as plans: the statements of list, show and
the three actions (retry, cancel, complete), with the decisions between them.

A plan is a generator that yields `(query, params)` and receives the rows
(`audit.Plan`); `troubleshooting` runs each on a sync or an async connection
(`audit.run`, `audit.run_async`), so the logic is written once. No I/O here.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from psycopg import sql

from . import codec
from ._command_types import check_result
from ._queries import raw
from ._tsq_records import (
    MAX_LIMIT,
    CommandDetail,
    TroubleshootingEntry,
    TroubleshootingPage,
    decode_cursor,
)
from .audit import Plan, audit_plan
from .errors import CannotRetry, ConcurrentOperationError, NotFoundError, ValidationError
from .names import IN_TROUBLESHOOTING, command_queue, done_channel, send_channel
from .pgmq import RawJson, archive_table, check_queue_name, queue_table
from .records import CommandRecord
from .registry import spec_for_kind

__all__ = [
    "VERBS",
    "act_plan",
    "check_operator",
    "check_plan",
    "list_plan",
    "result_plan",
    "show_plan",
]


def list_plan(
    domain: str | None,
    kind: str | None,
    limit: int,
    after: str | None,
    error_code: str | None = None,
) -> Plan[TroubleshootingPage]:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"Invalid limit {limit}: expected 1 to {MAX_LIMIT}")
    filters: list[str] = []
    params: dict[str, Any] = {}
    if domain is not None:
        filters.append("tsq_list_domain")
        params["domain"] = domain
    if kind is not None:
        # `Echo` matches `<domain>.Echo` in any domain; `testbus.Echo` matches itself.
        filters.append("tsq_list_kind" if "." in kind else "tsq_list_short_kind")
        params["kind"] = kind
    if error_code is not None:
        filters.append("tsq_list_error_code")
        params["error_code"] = error_code
    if after is not None:
        params["after_at"], params["after_domain"], params["after_id"] = decode_cursor(after)
        filters.append("tsq_list_after")
    where = sql.SQL("").join(sql.SQL("\n  " + raw(name)) for name in filters)
    text = sql.SQL(raw("tsq_list")).format(filters=where, limit=sql.Literal(limit + 1))
    rows = yield text, params
    items = [TroubleshootingEntry(**row) for row in rows[:limit]]
    return TroubleshootingPage(
        items=items, next_cursor=items[-1].cursor if len(rows) > limit else None
    )


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


def show_plan(domain: str, command_id: uuid.UUID) -> Plan[CommandDetail]:
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


VERBS = {"retried": "retry", "canceled": "cancel", "completed": "complete"}


def _state_error(
    domain: str, command_id: uuid.UUID, event: str, row: dict[str, Any]
) -> ConcurrentOperationError:
    why = ""
    if row["operator"] is not None:
        why = f" ({row['event']} by {row['operator']} at {row['at'].isoformat()})"
    return ConcurrentOperationError(
        f"Cannot {VERBS[event]} command {command_id} in domain `{domain}`: it is "
        f"{row['status']}, not {IN_TROUBLESHOOTING}{why}"
    )


def check_plan(domain: str, command_id: uuid.UUID, event: str) -> Plan[tuple[str, int]]:
    """Before the action's savepoint: fail early, without a lock, when not in the queue.

    Returns the command's kind and version.
    """
    rows = yield raw("tsq_status"), {"domain": domain, "command_id": command_id}
    if not rows:
        raise NotFoundError(f"No command {command_id} in domain `{domain}`")
    if rows[0]["status"] != IN_TROUBLESHOOTING:
        raise _state_error(domain, command_id, event, rows[0])
    return str(rows[0]["kind"]), int(rows[0]["version"])


def result_plan(kind: str, version: int, value: Any) -> Plan[RawJson]:
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


def act_plan(
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


def check_operator(operator: str) -> str:
    if not isinstance(operator, str) or not operator.strip():
        raise ValueError("An operator name is required: pass `operator=` (the CLI uses $USER)")
    return operator
