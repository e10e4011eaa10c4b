"""The names cbus builds in one place: queues, channels, status sets, command ids.

A sender, the worker, the waiters and the operator tools must agree on each of
these byte for byte; each is built here and nowhere else.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .records import CommandStatus

__all__ = [
    "BATCH_CHANNEL",
    "ENDED",
    "IN_TROUBLESHOOTING",
    "QUEUE_SUFFIX",
    "as_uuid",
    "command_queue",
    "done_channel",
    "require_uuid",
    "send_channel",
]

QUEUE_SUFFIX: Final = "__commands"
"""A domain's PGMQ queue is `<domain>__commands`; no reply queue may end so."""

IN_TROUBLESHOOTING: Final[CommandStatus] = "IN_TROUBLESHOOTING_QUEUE"
"""The status of a command the troubleshooting queue holds, until an operator acts."""

ENDED: Final[tuple[CommandStatus, ...]] = ("COMPLETED", "FAILED", "CANCELED")
"""Statuses a command never leaves (an operator may still act on IN_TROUBLESHOOTING)."""

BATCH_CHANNEL: Final = "cbus_batch"
"""The channel notified when a batch's last command ends."""


def command_queue(domain: str) -> str:
    """The PGMQ queue of a domain's commands."""
    return domain + QUEUE_SUFFIX


def send_channel(domain: str) -> str:
    """The channel a send notifies, so an idle worker of the domain wakes at once."""
    return f"cbus_{domain}"


def done_channel(domain: str) -> str:
    """The channel notified when one of the domain's commands ends (`wait_for` listens)."""
    return f"cbus_done_{domain}"


def as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    """A command_id given as a UUID or its text; raises ValueError naming the bad value."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValueError(f"Invalid command_id {value!r}: expected a UUID") from None


def require_uuid(name: str, value: uuid.UUID | None) -> None:
    """Refuse a sender's id argument that is not a `uuid.UUID` (None: cbus makes one)."""
    if value is not None and not isinstance(value, uuid.UUID):
        raise TypeError(f"{name} must be a uuid.UUID, got {type(value).__name__}")
