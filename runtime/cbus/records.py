"""A command as the log records it: `CommandRecord` and its `CommandStatus`.

A leaf module: nothing else from cbus, so the errors that carry a record and the
readers that build one (`store`, `waiting`) can all name it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

import msgspec

__all__ = ["CommandRecord", "CommandStatus"]

T = TypeVar("T")

CommandStatus: TypeAlias = Literal[
    "PENDING", "IN_PROGRESS", "COMPLETED", "FAILED", "IN_TROUBLESHOOTING_QUEUE", "CANCELED"
]
"""Every status of a command; `cbus.names` holds the sets the modules test against."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRecord:
    """A command as the log knows it. `result` is the handler's result as JSON data."""

    domain: str
    command_id: uuid.UUID
    kind: str
    version: int
    status: CommandStatus
    attempts: int
    max_attempts: int
    msg_id: int | None
    correlation_id: uuid.UUID
    reply_to: str | None
    batch_id: uuid.UUID | None
    causation_id: uuid.UUID | None
    last_error_type: str | None
    last_error_code: str | None
    last_error_message: str | None
    last_error_details: Any
    result: Any
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None

    __module__ = "cbus"

    def result_as(self, type_: type[T]) -> T | None:
        """The stored result decoded into the command's generated result class."""
        if self.result is None:
            return None
        return msgspec.convert(self.result, type_, strict=False)
