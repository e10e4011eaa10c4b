"""The surface generated code is written against, numbered by `API_VERSION`.

cbgen's output imports this module and nothing else of cbus (`import cbus.api`), and
uses no name that is not here; `API_VERSION` (in `cbus.version`) is bumped when
that set, or what one of its names does for generated code, grows. A generated
module calls `require_api(N, generator)` first: code written for a newer API refuses
to import, naming both versions.

What a module declares loads with it (the registry, `DEFAULT`, the handler bases,
`BusinessError`); the senders, waiters and readers load on first use, as the
package's names do, so importing generated code costs psycopg and msgspec only.
"""

from __future__ import annotations

import sys
import typing
from typing import Any

from .errors import BusinessError
from .registry import (
    DEFAULT,
    AsyncHandlers,
    CommandSpec,
    DomainSpec,
    Handlers,
    Options,
    PreviousSpec,
    RateLimit,
    Retention,
    ScheduleSpec,
    register,
    require_api,
)
from .version import API_VERSION

if typing.TYPE_CHECKING:
    from ._send_base import SendResult
    from .bus import send
    from .bus_async import send_async
    from .context import AsyncContext, Context
    from .install import install_domain, install_domain_async
    from .records import CommandRecord
    from .store import result_of
    from .targets import AsyncTarget, AsyncWaitTarget, SyncTarget, WaitTarget
    from .waiting import wait_for
    from .waiting_async import wait_for_async
    from .wire import Reply

if not typing.TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """A name that loads on first use: the package's own, which it loads lazily."""
        if name not in __all__:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(sys.modules[__package__], name)  # the parent, imported first
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "API_VERSION",
    "DEFAULT",
    "AsyncContext",
    "AsyncHandlers",
    "AsyncTarget",
    "AsyncWaitTarget",
    "BusinessError",
    "CommandRecord",
    "CommandSpec",
    "Context",
    "DomainSpec",
    "Handlers",
    "Options",
    "PreviousSpec",
    "RateLimit",
    "Reply",
    "Retention",
    "ScheduleSpec",
    "SendResult",
    "SyncTarget",
    "WaitTarget",
    "install_domain",
    "install_domain_async",
    "register",
    "require_api",
    "result_of",
    "send",
    "send_async",
    "wait_for",
    "wait_for_async",
]
