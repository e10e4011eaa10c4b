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
from .codec import BatchCompleted, Reply, ReplyError, decode_batch_completed, decode_reply
from .context import AsyncContext, Context
from .errors import (
    BusinessError,
    CannotRetry,
    CommandCanceled,
    CommandInTroubleshooting,
    CommandNotCompleted,
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
    WorkerFailed,
)
from .install import install, install_async, install_domain, install_domain_async
from .registry import AsyncHandlers, Handlers
from .store import CommandRecord, CommandStatus, get_command, get_command_async, result_of
from .troubleshooting import (
    CommandDetail,
    TroubleshootingEntry,
    TroubleshootingPage,
    list_troubleshooting,
    list_troubleshooting_async,
    show_command,
    show_command_async,
)
from .waiting import BatchStatus, batch_status, trace, wait_batch, wait_for
from .waiting_async import batch_status_async, trace_async, wait_batch_async, wait_for_async
from .worker import Worker
from .worker_async import AsyncWorker

SyncTarget: TypeAlias = "psycopg.Connection[Any] | Bus | Context"
WaitTarget: TypeAlias = "psycopg.Connection[Any] | Bus"
AsyncWaitTarget: TypeAlias = "psycopg.AsyncConnection[Any] | AsyncBus"
AsyncTarget: TypeAlias = "psycopg.AsyncConnection[Any] | AsyncBus | AsyncContext"

__all__ = [
    "AsyncWaitTarget",
    "CommandCanceled",
    "CommandInTroubleshooting",
    "CommandNotCompleted",
    "WaitTarget",
    "result_of",
    "BatchCompleted",
    "BatchStatus",
    "Reply",
    "ReplyError",
    "batch_status",
    "batch_status_async",
    "decode_batch_completed",
    "decode_reply",
    "trace",
    "trace_async",
    "wait_batch",
    "wait_batch_async",
    "wait_for",
    "wait_for_async",
    "AsyncBus",
    "AsyncContext",
    "AsyncHandlers",
    "AsyncTarget",
    "AsyncWorker",
    "AuditEvent",
    "Bus",
    "BusinessError",
    "CommandDetail",
    "CommandRecord",
    "CommandStatus",
    "CannotRetry",
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
    "TroubleshootingEntry",
    "TroubleshootingPage",
    "ValidationError",
    "WorkerFailed",
    "Worker",
    "codec",
    "get_audit",
    "get_audit_async",
    "get_command",
    "get_command_async",
    "install",
    "install_async",
    "install_domain",
    "install_domain_async",
    "list_troubleshooting",
    "list_troubleshooting_async",
    "registry",
    "send",
    "send_async",
    "send_many",
    "send_many_async",
    "show_command",
    "show_command_async",
    "troubleshooting",
]
