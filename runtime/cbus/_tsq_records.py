"""The troubleshooting queue's records: an entry, a page of entries, a command's detail.

Data only: the operations that fill them are in `_tsq_plans` (the statements) and
`troubleshooting` (the functions users call).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from .audit import AuditEvent
from .records import CommandRecord

__all__ = [
    "MAX_LIMIT",
    "CommandDetail",
    "TroubleshootingEntry",
    "TroubleshootingPage",
    "decode_cursor",
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


def decode_cursor(cursor: str) -> tuple[dt.datetime, str, uuid.UUID]:
    try:
        micros, domain, command_id = cursor.split(".")
        at = _EPOCH + dt.timedelta(microseconds=int(micros))
        return at, domain, uuid.UUID(hex=command_id)
    except (ValueError, OverflowError):
        raise ValueError(
            f"Invalid cursor {cursor!r}: pass the `next_cursor` of a previous page"
        ) from None
