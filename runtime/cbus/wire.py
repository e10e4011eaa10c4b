"""The wire structs: a command message's headers, a reply, a batch's completion.

Contract section 7. A leaf module: msgspec only, nothing else from cbus, so the
errors, the codec and the readers can all name these types.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, TypeVar

import msgspec

__all__ = ["BatchCompleted", "Headers", "Reply", "ReplyError"]

T = TypeVar("T")


class Headers(msgspec.Struct, frozen=True, omit_defaults=True):
    """The PGMQ headers of a command message."""

    kind: str
    version: int
    command_id: uuid.UUID
    correlation_id: uuid.UUID
    reply_to: str | None = None
    batch_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None
    priority: int | None = None  # the sender's `priority=`, else the schema's; None: 5
    # The command's ordering_key value as JSON text (prefixed by the kind for a
    # command's own option, hashed beyond 200 characters); None: not keyed.
    ordering_key: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    # W3C trace context (cbus.tracing): a traceparent is 55 characters, a tracestate
    # at most 512 by the W3C's limit.
    traceparent: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    tracestate: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    # The traceparent of the previous attempt's consumer span, written by the worker
    # when it schedules a retry or sets the command aside: the next attempt's span links
    # to it, whichever worker process runs it (cbus.tracing).
    previous_span: Annotated[str, msgspec.Meta(max_length=128)] | None = None


class ReplyError(msgspec.Struct, frozen=True, omit_defaults=True):
    """Why a command did not succeed: its error code and message."""

    code: str
    message: str = ""
    type: str | None = None
    details: Any = None  # a business error's details, as JSON data


class Reply(msgspec.Struct, frozen=True, omit_defaults=True):
    """The message a worker sends to a command's `reply_to` queue when the command ends.

    `outcome` is SUCCESS (with `result`, the handler's result as JSON data), FAILED
    (a declared business error, in `error`) or CANCELED (by an operator).
    """

    command_id: uuid.UUID
    correlation_id: uuid.UUID
    kind: str
    outcome: Literal["SUCCESS", "FAILED", "CANCELED"]
    result: Any = None
    error: ReplyError | None = None

    def result_as(self, type_: type[T]) -> T:
        """The result decoded into the command's generated result class."""
        return msgspec.convert(self.result, type_, strict=False)


class BatchCompleted(msgspec.Struct, frozen=True, omit_defaults=True):
    """The message sent to a batch's `reply_to` queue when its last command ends."""

    batch_id: uuid.UUID
    total: int
    completed: int
    failed: int
    canceled: int
    correlation_id: uuid.UUID | None = None
