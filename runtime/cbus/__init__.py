"""cbus: a typed command bus on PostgreSQL + PGMQ.

Generated senders put commands on PGMQ inside the caller's transaction; a `Worker`
decodes them into their generated classes and runs the handlers users write by
subclassing generated stubs.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import Any, TypeAlias

import psycopg

from . import codec, registry, troubleshooting
from ._send_base import SendResult
from .audit import AuditEvent, get_audit, get_audit_async
from .bus import Bus, send, send_many
from .bus_async import AsyncBus, send_async, send_many_async
from .context import AsyncContext, Context
from .errors import (
    BusinessError,
    ConcurrentOperationError,
    DuplicateCommandError,
    Error,
    IncompatibleGeneratedCode,
    InstallError,
    NotFoundError,
    PermanentError,
    ReplyTimeout,
    TransientError,
    ValidationError,
)
from .install import install, install_async, install_domain, install_domain_async
from .registry import AsyncHandlers, Handlers
from .store import CommandRecord, get_command, get_command_async
from .troubleshooting import (
    CommandDetail,
    TroubleshootingEntry,
    TroubleshootingPage,
    list_troubleshooting,
    list_troubleshooting_async,
    show_command,
    show_command_async,
)
from .worker import Worker
from .worker_async import AsyncWorker

SyncTarget: TypeAlias = "psycopg.Connection[Any] | Bus"
AsyncTarget: TypeAlias = "psycopg.AsyncConnection[Any] | AsyncBus"

__all__ = [
    "troubleshooting",
    "show_command_async",
    "show_command",
    "list_troubleshooting_async",
    "list_troubleshooting",
    "get_audit_async",
    "get_audit",
    "TroubleshootingPage",
    "TroubleshootingEntry",
    "CommandDetail",
    "AuditEvent",
    "AsyncBus",
    "AsyncContext",
    "AsyncHandlers",
    "AsyncTarget",
    "AsyncWorker",
    "Bus",
    "BusinessError",
    "CommandRecord",
    "ConcurrentOperationError",
    "Context",
    "DuplicateCommandError",
    "Error",
    "Handlers",
    "IncompatibleGeneratedCode",
    "InstallError",
    "NotFoundError",
    "PermanentError",
    "ReplyTimeout",
    "SendResult",
    "SyncTarget",
    "TransientError",
    "ValidationError",
    "Worker",
    "codec",
    "get_command",
    "get_command_async",
    "install",
    "install_async",
    "install_domain",
    "install_domain_async",
    "registry",
    "send",
    "send_async",
    "send_many",
    "send_many_async",
]
