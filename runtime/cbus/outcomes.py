# Generated from outcomes_async.py by tools/async_to_sync.py.
# DO NOT EDIT: change outcomes_async.py instead.
"""What follows when a command ends: its reply, its batch's completion, a wake-up.

Runs in the transaction that ends the command (the worker's acknowledgement, or an
operator's action), so a reply or a batch completion is sent if and only if the
command's end commits. Costs nothing for commands with no reply_to and no batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import psycopg

from . import codec
from ._queries import query
from .pgmq import RawJson, reply_queue_problem

__all__ = ["Ended", "commands_ended"]


@dataclass(frozen=True, slots=True)
class Ended:
    """A command that just reached COMPLETED, FAILED or CANCELED."""

    command_id: uuid.UUID
    correlation_id: uuid.UUID
    kind: str
    outcome: Literal["SUCCESS", "FAILED", "CANCELED"]
    reply_to: str | None
    batch_id: uuid.UUID | None
    result: bytes | None = None
    error_code: str | None = None
    error_message: str = ""
    error_type: str | None = None
    error_details: bytes | None = None  # JSON

    def reply(self) -> RawJson:
        error = None
        if self.error_code is not None:
            details = msgspec.Raw(self.error_details) if self.error_details is not None else None
            error = codec.ReplyError(self.error_code, self.error_message, self.error_type, details)
        return RawJson(
            codec.encode(
                codec.Reply(
                    command_id=self.command_id,
                    correlation_id=self.correlation_id,
                    kind=self.kind,
                    outcome=self.outcome,
                    result=msgspec.Raw(self.result) if self.result is not None else None,
                    error=error,
                )
            )
        )


def commands_ended(conn: psycopg.Connection[Any], domain: str, ended: Sequence[Ended]) -> None:
    """Send the replies and complete the batches of commands that ended in this transaction."""
    replies = [e for e in ended if e.reply_to is not None]
    if replies:
        conn.execute(
            query("send_replies"),
            {
                "domain": domain,
                "queues": [e.reply_to for e in replies],
                "messages": [e.reply() for e in replies],
                "command_ids": [e.command_id for e in replies],
                "refused": [reply_queue_problem(e.reply_to or "") for e in replies],
            },
        )
    batch_ids = sorted({e.batch_id for e in ended if e.batch_id is not None})
    if batch_ids:
        conn.execute(query("lock_batches"), {"batch_ids": batch_ids})
        conn.execute(query("complete_batches"), {"batch_ids": batch_ids})
