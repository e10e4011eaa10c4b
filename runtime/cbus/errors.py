"""The exceptions cbus raises and the ones handlers raise to steer delivery.

One root, `cbus.Error`; each class is worth catching on its own.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records import CommandRecord
    from .wire import Reply

__all__ = [
    "BusinessError",
    "CannotRetry",
    "CommandCanceled",
    "CommandInTroubleshooting",
    "CommandNotCompleted",
    "ConcurrentOperationError",
    "DuplicateCommandError",
    "Error",
    "IncompatibleGeneratedCode",
    "InstallError",
    "NotFoundError",
    "PermanentError",
    "ReplyTimeout",
    "TransientError",
    "ValidationError",
    "WorkerFailed",
]


class Error(Exception):
    """Root of every error cbus raises."""

    __module__ = "cbus"


class InstallError(Error):
    """The database cannot be made ready (for example PGMQ older than 1.5); see the message."""

    __module__ = "cbus"


class IncompatibleGeneratedCode(Error, RuntimeError):
    """Generated code needs a newer cbus runtime: upgrade cbus or regenerate with an older cbgen."""

    __module__ = "cbus"


class ValidationError(Error, ValueError):
    """A command does not satisfy its schema; the message names the field as `$.path`."""

    __module__ = "cbus"


class DuplicateCommandError(Error):
    """A command with this command_id was already sent in the domain; nothing was enqueued."""

    __module__ = "cbus"

    def __init__(self, domain: str, command_id: uuid.UUID) -> None:
        super().__init__(f"Command {command_id} was already sent in domain `{domain}`")
        self.domain = domain
        self.command_id = command_id


class NotFoundError(Error, LookupError):
    """No command with this id exists in the domain."""

    __module__ = "cbus"


class ConcurrentOperationError(Error):
    """Another operator or worker changed the command first; reload it and decide again."""

    __module__ = "cbus"


class CannotRetry(Error):
    """A command the troubleshooting queue holds cannot be sent again as it is.

    Its message carries no command_id of its own (the id was made up when it was set
    aside): sent again, it would be set aside under another id. Cancel or complete
    it, and send a corrected message.
    """

    __module__ = "cbus"


class CommandNotCompleted(Error):
    """The command ended (or stopped) without a result: see `status` and `record`."""

    __module__ = "cbus"

    def __init__(
        self, message: str, status: str, record: CommandRecord | Reply | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.record = record


class CommandCanceled(CommandNotCompleted):
    """An operator canceled the command."""

    __module__ = "cbus"


class CommandInTroubleshooting(CommandNotCompleted):
    """The command is in the troubleshooting queue, waiting for an operator."""

    __module__ = "cbus"


class ReplyTimeout(Error, TimeoutError):
    """The command did not end before the timeout; it may still complete later."""

    __module__ = "cbus"


class PermanentError(Error):
    """Raised by a handler: the command cannot succeed, send it to the troubleshooting queue now."""

    __module__ = "cbus"

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class TransientError(Error):
    """Raised by a handler: try again after the backoff (any other exception does the same)."""

    __module__ = "cbus"

    def __init__(self, message: str = "", *, code: str = "TRANSIENT") -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message


class BusinessError(Error):
    """Raised by a handler with a code its schema declares under `errors`.

    The command ends as FAILED at once: no retry, no troubleshooting queue, and a
    FAILED reply carrying the code when the sender asked for one.
    """

    __module__ = "cbus"

    def __init__(self, code: str, message: str = "", details: Any = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.details = details


class WorkerFailed(Error):
    """The worker stopped on its own: its consumers cannot run, or a second signal's grace ended."""

    __module__ = "cbus"
