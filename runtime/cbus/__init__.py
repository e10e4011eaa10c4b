"""cbus: a typed command bus on PostgreSQL + PGMQ.

Generated senders put commands on PGMQ inside the caller's transaction; a `Worker`
decodes them into their generated classes and runs the handlers users write by
subclassing generated stubs.
"""

from __future__ import annotations

import importlib
import sys
import types
import typing
from typing import Any

# Generated modules need these two at import: their handler stubs and error classes
# derive from them. Everything else loads on first use (`__getattr__` below), so a
# process that imports generated code pays for psycopg and msgspec, not for the
# worker, the senders and the operator tools it may never call.
from . import registry
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
from .registry import AsyncHandlers, Handlers
from .version import __version__ as __version__

if typing.TYPE_CHECKING:
    from . import codec, troubleshooting
    from ._send_base import SendResult
    from .audit import AuditEvent, get_audit, get_audit_async
    from .bus import Bus, send, send_many
    from .bus_async import AsyncBus, send_async, send_many_async
    from .codec import decode_batch_completed, decode_reply
    from .context import AsyncContext, Context
    from .install import install, install_async, install_domain, install_domain_async
    from .records import CommandRecord, CommandStatus
    from .store import get_command, get_command_async, result_of
    from .targets import AsyncTarget, AsyncWaitTarget, SyncTarget, WaitTarget
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
    from .wire import BatchCompleted, Reply, ReplyError
    from .worker import AsyncWorker, Worker

_LAZY: dict[str, tuple[str, ...]] = {
    "._send_base": ("SendResult",),
    ".audit": ("AuditEvent", "get_audit", "get_audit_async"),
    ".bus": ("Bus", "send", "send_many"),
    ".bus_async": ("AsyncBus", "send_async", "send_many_async"),
    ".codec": ("decode_batch_completed", "decode_reply"),
    ".context": ("AsyncContext", "Context"),
    ".install": ("install", "install_async", "install_domain", "install_domain_async"),
    ".records": ("CommandRecord", "CommandStatus"),
    ".store": ("get_command", "get_command_async", "result_of"),
    ".targets": ("AsyncTarget", "AsyncWaitTarget", "SyncTarget", "WaitTarget"),
    ".troubleshooting": (
        "CommandDetail",
        "TroubleshootingEntry",
        "TroubleshootingPage",
        "list_troubleshooting",
        "list_troubleshooting_async",
        "show_command",
        "show_command_async",
    ),
    ".waiting": ("BatchStatus", "batch_status", "trace", "wait_batch", "wait_for"),
    ".waiting_async": ("batch_status_async", "trace_async", "wait_batch_async", "wait_for_async"),
    ".wire": ("BatchCompleted", "Reply", "ReplyError"),
    ".worker": ("AsyncWorker", "Worker"),
}
_HOME = {name: module for module, names in _LAZY.items() for name in names}
_SUBMODULES = frozenset({"codec", "troubleshooting"})

if not typing.TYPE_CHECKING:
    # Type checkers see the imports above instead: a visible module `__getattr__`
    # would let every misspelt `cbus.name` type-check.

    def __getattr__(name: str) -> Any:
        """Import a public name's module on first use, and keep the name."""
        if name in _SUBMODULES:
            return importlib.import_module(f".{name}", __name__)
        home = _HOME.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home, __name__), name)
        globals()[name] = value
        return value


class _Package(types.ModuleType):
    """Keeps a public name that is also a submodule's (`install`) the public object.

    Importing `cbus.install` sets the package's attribute `install` to the module once
    it has loaded; with the name resolved lazily, that would hide the function.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _HOME and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    """The package's names, the lazy ones included before their first use."""
    return sorted({*globals(), *__all__})


__all__ = [
    "AsyncBus",
    "AsyncContext",
    "AsyncHandlers",
    "AsyncTarget",
    "AsyncWaitTarget",
    "AsyncWorker",
    "AuditEvent",
    "BatchCompleted",
    "BatchStatus",
    "Bus",
    "BusinessError",
    "CannotRetry",
    "CommandCanceled",
    "CommandDetail",
    "CommandInTroubleshooting",
    "CommandNotCompleted",
    "CommandRecord",
    "CommandStatus",
    "ConcurrentOperationError",
    "Context",
    "DuplicateCommandError",
    "Error",
    "Handlers",
    "IncompatibleGeneratedCode",
    "InstallError",
    "NotFoundError",
    "PermanentError",
    "Reply",
    "ReplyError",
    "ReplyTimeout",
    "SendResult",
    "SyncTarget",
    "TransientError",
    "TroubleshootingEntry",
    "TroubleshootingPage",
    "ValidationError",
    "WaitTarget",
    "Worker",
    "WorkerFailed",
    "batch_status",
    "batch_status_async",
    "codec",
    "decode_batch_completed",
    "decode_reply",
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
    "result_of",
    "send",
    "send_async",
    "send_many",
    "send_many_async",
    "show_command",
    "show_command_async",
    "trace",
    "trace_async",
    "troubleshooting",
    "wait_batch",
    "wait_batch_async",
    "wait_for",
    "wait_for_async",
]
