# Generated from _worker_record_async.py by tools/async_to_sync.py.
# DO NOT EDIT: change _worker_record_async.py instead.
"""What a worker writes when a command does not complete, and the audit rows beside it.

A failure is retried, failed (a declared business error) or set aside in the
troubleshooting queue; a message that cannot run at all is set aside (or, for a
duplicate, dropped). Each runs in the caller's transaction.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Literal

import msgspec
import psycopg

from . import _versions as versions
from . import codec
from ._handler_conn import HandlerConnection
from ._queries import query
from ._worker_domain import DomainRuntime
from ._worker_failure import Outcome, classify
from ._worker_triage import Delivery, Poison
from .errors import BusinessError, PermanentError, TransientError
from .metrics import NULL_OBSERVER, NullObserver
from .names import IN_TROUBLESHOOTING
from .outcomes import Ended, commands_ended
from .pgmq import RawJson
from .tracing import traceparent_of

__all__ = ["audit", "record_failure", "set_aside", "to_ended"]

log = logging.getLogger("cbus.worker")


def record_failure(
    conn: psycopg.Connection[Any],
    runtime: DomainRuntime,
    delivery: Delivery,
    exc: BaseException,
    observer: NullObserver = NULL_OBSERVER,
) -> None:
    failure = classify(delivery, exc)
    command_id = delivery.headers.command_id
    extra = {
        "action": f"command_{failure.outcome.value}",
        "kind": delivery.spec.kind,
        "command_id": str(command_id),
        "attempt": delivery.read_ct,
    }
    # Business, permanent and transient errors are outcomes the handler chose; any
    # other exception is a bug or an outage, and its traceback what an operator
    # needs: once, when the command stops being retried. Earlier attempts say the
    # error in one line.
    expected = isinstance(exc, BusinessError | PermanentError | TransientError)
    log.log(
        logging.INFO if expected else logging.WARNING,
        "%s %s %s (attempt %d): %s%s",
        delivery.spec.kind,
        command_id,
        failure.outcome.value,
        delivery.read_ct,
        "" if expected else f"{failure.error_type}: ",
        failure.message,
        extra=extra,
        exc_info=None if expected or failure.outcome is Outcome.RETRY else exc,
    )
    detail: dict[str, Any] = {
        "type": failure.error_type,
        "code": failure.code,
        "message": failure.message,
    }
    if failure.details is not None:
        detail["details"] = msgspec.Raw(failure.details)
    audit(conn, runtime, command_id, "failed", delivery.read_ct, detail)
    if failure.outcome is Outcome.RETRY:
        cur = conn.execute(
            query("retry_later", runtime.queue),
            {
                "domain": runtime.spec.name,
                "command_id": command_id,
                "msg_id": delivery.msg_id,
                "read_ct": delivery.read_ct,
                "backoff": failure.backoff,
                "error_type": failure.error_type,
                "error_code": failure.code,
                "error_message": failure.message,
                "previous_span": traceparent_of(delivery.span),
            },
        )
        if cur.fetchone() is not None:
            audit(
                conn,
                runtime,
                command_id,
                "retry_scheduled",
                delivery.read_ct,
                {"in_seconds": failure.backoff},
            )
            observer.retried(runtime, delivery)
        return
    if failure.outcome is Outcome.FAILED:
        cur = conn.execute(
            query("delete_message", runtime.queue),
            {"msg_id": delivery.msg_id, "read_ct": delivery.read_ct},
        )
        if cur.rowcount != 1:
            return  # the lease was lost: whoever holds the message now decides
        status = "FAILED"
    else:
        cur = conn.execute(
            query("archive_message", runtime.queue),
            {
                "msg_id": delivery.msg_id,
                "read_ct": delivery.read_ct,
                "previous_span": traceparent_of(delivery.span),
            },
        )
        if cur.rowcount != 1:
            return  # the lease was lost: whoever holds the message now decides
        status = IN_TROUBLESHOOTING
        audit(conn, runtime, command_id, "moved_to_troubleshooting", delivery.read_ct, detail)
    conn.execute(
        query("end_command"),
        {
            "domain": runtime.spec.name,
            "command_id": command_id,
            "status": status,
            "attempts": delivery.read_ct,
            "error_type": failure.error_type,
            "error_code": failure.code,
            "error_message": failure.message,
            "error_details": failure.details,
            "result": None,
            "msg_id": delivery.msg_id,
            "done_channel": runtime.done_channel,
        },
    )
    observer.ended(runtime, delivery, status)
    if status == "FAILED":
        ended = to_ended(
            delivery,
            "FAILED",
            failure.code,
            failure.message,
            failure.error_type,
            failure.details,
        )
        commands_ended(conn, runtime.spec.name, [ended])


def set_aside(
    conn: HandlerConnection,
    runtime: DomainRuntime,
    p: Poison,
    observer: NullObserver = NULL_OBSERVER,
) -> None:
    """Troubleshooting queue (or, for a duplicate, deletion) for a message that cannot run."""
    if p.grace is not None:  # a newer worker may run it: back to the queue, in grace
        cur = conn.execute(query("wait_for_newer", runtime.queue), versions.wait_params(runtime, p))
        if versions.left_for_newer(runtime, p, cur.fetchone()):
            return
    observer.set_aside(runtime, p)
    log.warning(
        "message %s %s: %s",
        p.msg_id,
        "dropped" if p.drop else "set aside",
        p.reason,
        extra={
            "action": "duplicate" if p.drop else "poison",
            "code": p.code,
            "msg_id": p.msg_id,
        },
    )
    with conn.transaction():
        if p.drop:
            conn.execute(
                query("delete_message", runtime.queue),
                {"msg_id": p.msg_id, "read_ct": p.read_ct},
            )
        else:
            conn.execute(
                query("archive_message", runtime.queue),
                {"msg_id": p.msg_id, "read_ct": p.read_ct, "previous_span": None},
            )
        if p.command_id is None:
            return
        detail = {"code": p.code, "message": p.reason, "msg_id": p.msg_id}
        if p.drop:
            audit(conn, runtime, p.command_id, "duplicate_dropped", p.read_ct, detail)
            return
        audit(conn, runtime, p.command_id, "moved_to_troubleshooting", p.read_ct, detail)
        conn.execute(
            query("set_aside"),
            {
                "domain": runtime.spec.name,
                "command_id": p.command_id,
                "kind": p.kind or "unknown",
                "version": p.version,
                "attempts": p.read_ct,
                "max_attempts": runtime.default_max_attempts,
                "error_code": p.code,
                "error_message": p.reason,
                "msg_id": p.msg_id,
                "done_channel": runtime.done_channel,
            },
        )


def audit(
    conn: psycopg.Connection[Any],
    runtime: DomainRuntime,
    command_id: uuid.UUID,
    event: str,
    attempt: int | None,
    detail: dict[str, Any] | None,
) -> None:
    conn.execute(
        query("audit"),
        {
            "domain": runtime.spec.name,
            "command_id": command_id,
            "event": event,
            "attempt": attempt,
            "operator": None,
            "detail": RawJson(codec.encode(detail)) if detail is not None else None,
        },
    )


def to_ended(
    d: Delivery,
    outcome: Literal["SUCCESS", "FAILED", "CANCELED"],
    code: str | None = None,
    message: str = "",
    error_type: str | None = None,
    details: bytes | None = None,
) -> Ended:
    return Ended(
        command_id=d.headers.command_id,
        correlation_id=d.headers.correlation_id,
        kind=d.spec.kind,
        outcome=outcome,
        reply_to=d.headers.reply_to,
        batch_id=d.headers.batch_id,
        result=d.result,
        error_code=code,
        error_message=message,
        error_type=error_type,
        error_details=details,
    )
