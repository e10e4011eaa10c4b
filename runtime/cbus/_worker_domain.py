"""A domain as a worker serves it: its handlers, lease size, lease statement and backoff."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import _versions as versions
from . import codec
from ._ordering import LeaseMode, lease_mode
from ._queries import query
from ._rate_limit import RateLimits
from .names import done_channel
from .pgmq import RawJson
from .registry import CommandSpec, DomainSpec, domain_of, implemented_methods, stub_of

__all__ = ["DomainRuntime", "LeaseSize", "generated_package_of", "pending_query", "read_query"]

log = logging.getLogger("cbus.worker")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

KEYED_BATCH = 32
"""The largest lease of a domain with an ordering_key (ADR 0011 measures it)."""


@dataclass(slots=True)
class DomainRuntime:
    """A domain as one worker serves it: its queue, and a bound method per kind."""

    spec: DomainSpec
    handlers: object
    methods: dict[str, Callable[..., Any]]
    specs: dict[str, CommandSpec]
    max_attempts_json: RawJson
    default_max_attempts: int
    queue: str
    visibility_timeout: int  # the longest of the domain's commands: one read leases all
    done_channel: str
    rate: RateLimits | None = None  # rate: the limited kinds; None: no statement for them
    lease_mode: LeaseMode = "plain"  # ordering keys and priorities (ADR 0011)

    @classmethod
    def of(cls, handlers: object) -> DomainRuntime:
        spec = domain_of(handlers)
        implemented = implemented_methods(handlers)
        versions.check_hooks(handlers, spec, implemented)
        _warn_misspelt_handlers(handlers, spec, implemented)
        return cls(
            spec=spec,
            handlers=handlers,
            methods={
                c.kind: getattr(handlers, c.handler_method)
                for c in spec.commands
                if c.handler_method in implemented
            },
            specs=versions.kinds_of(spec),
            max_attempts_json=RawJson(
                codec.encode(
                    {k: c.options.max_attempts for k, c in versions.kinds_of(spec).items()}
                )
            ),
            default_max_attempts=spec.options.max_attempts,
            queue=spec.queue,
            visibility_timeout=max(c.options.visibility_timeout for c in spec.commands),
            done_channel=done_channel(spec.name),
            rate=RateLimits.of(spec),
            lease_mode=lease_mode(spec),
        )

    def lease_size(self, batch_size: int) -> LeaseSize:
        """How this domain's consumers size their leases (shared by them).

        A keyed domain's batch holds one command per key, run one after the other,
        so a consumer that leased the heads of many keys would hold all of them
        while other consumers idle: its batches stop at `KEYED_BATCH`, and shrink
        when a lease comes back short, a sign that few keys are free (ADR 0011).
        """
        if self.lease_mode in ("plain", "priority"):
            return LeaseSize(batch_size)
        return LeaseSize(min(batch_size, KEYED_BATCH), keyed=True)

    def read_params(self, audit_full: bool, after: datetime | None = None) -> dict[str, Any]:
        return {
            "after": after,
            "audit_full": audit_full,
            "domain": self.spec.name,
            "vt": self.visibility_timeout,
            "max_attempts": self.max_attempts_json,
            "default_max_attempts": self.default_max_attempts,
        }


def _warn_misspelt_handlers(
    handlers: object, spec: DomainSpec, implemented: frozenset[str]
) -> None:
    """Say so at start when commands of the domain have no handler method.

    Their messages would otherwise reach the troubleshooting queue (no handler)
    with nothing to tell why until the first one arrives. A public method that
    looks like a missing handler method with a typo is named with its likely
    target; a handler method the class does override is never a typo.
    """
    missing = {
        c.handler_method: c.kind for c in spec.commands if c.handler_method not in implemented
    }
    if not missing:
        return
    name_of = type(handlers).__name__
    methods = {c.handler_method for c in spec.commands}
    explained: set[str] = set()
    stub = stub_of(handlers)
    for cls in type(handlers).__mro__:
        if cls is stub:
            break
        for name in vars(cls):
            if name.startswith("_") or name in methods or not callable(getattr(cls, name, None)):
                continue
            close = difflib.get_close_matches(name, missing, n=1, cutoff=0.7)
            if close and close[0] not in explained:
                explained.add(close[0])
                log.warning(
                    "%s.%s handles no command; did you mean %s? Commands %s have no handler "
                    "and go to the troubleshooting queue",
                    name_of,
                    name,
                    close[0],
                    missing[close[0]],
                    extra={"action": "handler_misspelt", "kind": missing[close[0]]},
                )
    unhandled = [(m, kind) for m, kind in missing.items() if m not in explained]
    if unhandled:
        log.warning(
            "%s has no handler for %s: these commands go to the troubleshooting queue",
            name_of,
            ", ".join(f"{kind} ({m})" for m, kind in unhandled),
            extra={"action": "handler_missing", "kind": unhandled[0][1]},
        )


def generated_package_of(handlers: object) -> str:
    """The generated package a handler object's stub comes from (`shop` for shop.orders)."""
    stub = stub_of(handlers)
    if stub is None:
        return "PACKAGE"
    return stub.__module__.rpartition(".")[0] or stub.__module__


class LeaseSize:
    """How many messages a consumer leases next: about what its handlers run in `TARGET` s.

    Batching spreads one lease and one acknowledgement over many quick handlers; for
    slow ones it only queues behind one consumer what idle consumers could run
    (concurrency=4 with eight one-second commands took 8.5 s, one after the other).
    A worker's consumers of a domain share one: it starts at one message, doubles
    with each batch while handlers are quick, up to the worker's batch size, and
    drops at once when they are slow; an empty lease starts it over, since the
    commands that end a lull may be slow ones. Sizes are powers of two (and the
    batch size): each is a statement of its own, prepared once.

    It also keeps where the lease's scan starts (`after`). A drain leaves dead index
    entries at the head of the queue until a vacuum, and a scan from the head steps
    over all of them: 7.4 ms for 100 messages 150,000 into a drain, against 0.1 ms
    on a fresh queue (ADR 0004). While leases come back full, the next starts at the
    earliest `vt` of the last; at least every `RESCAN` s, and after a short lease,
    one scans the whole queue again, for what the bound leaves out: a message whose
    sender committed late, one sent to run at a moment already past, a lease rolled
    back.
    """

    TARGET = 0.25
    RESCAN = 1.0

    def __init__(self, limit: int, *, keyed: bool = False) -> None:
        self.limit = limit
        self.size = 1
        self.keyed = keyed
        self._after: datetime | None = None
        self._scanned = 0.0

    def forget(self) -> None:
        """The queue ran dry: what comes next may be slow, so start small again."""
        self.size = 1
        self._after = None

    def record(self, count: int, seconds: float) -> None:
        """Learn from a batch of `count` messages that took `seconds` to run."""
        if count <= 0:
            return
        fits = int(self.TARGET * count / seconds) if seconds > 0 else self.limit
        want = max(1, min(self.limit, fits, self.size * 2))
        self.size = want if want == self.limit else 1 << (want.bit_length() - 1)

    def after(self, now: float) -> datetime | None:
        """Where the next lease's scan starts (None: the head of the queue)."""
        if self._after is None or now - self._scanned >= self.RESCAN:
            self._scanned = now
            return None
        return self._after

    def leased(self, asked: int, rows: list[Any]) -> None:
        """Learn from a lease: full, the next one starts at its earliest `vt` (`due_us`).

        A keyed domain's lease that came back short (but not empty) means few keys were
        free: halve the next leases, so that those keys spread over the consumers
        instead of queueing behind this one (ADR 0011).
        """
        if rows and len(rows) >= asked:
            # `due_us`, the last column: microseconds since the epoch, exact in an int.
            self._after = _EPOCH + timedelta(microseconds=min(row[-1] for row in rows))
        else:
            self._after = None
        if self.keyed and rows and len(rows) < self.size:
            count = len(rows)
            self.size = 1 << (max(1, count // 2).bit_length() - 1)


def read_query(queue: str, batch_size: int, last_read_at: bool, mode: LeaseMode = "plain") -> bytes:
    """The lease statement for a queue whose table has (or lacks) PGMQ 1.10's last_read_at.

    `mode` is the domain's `lease_mode`: a domain that uses neither ordering keys nor
    priorities keeps the plain `read` (ADR 0011).
    """
    name = "read" if last_read_at else "read_before_pgmq_1_10"
    return query(name if mode == "plain" else f"{name}_{mode}", queue, batch_size)


def pending_query(mode: LeaseMode) -> str:
    """The name of `run(until_idle=True)`'s check: a keyed domain's leaves out messages
    held back behind a command of their key in the troubleshooting queue."""
    return "pending" if mode in ("plain", "priority") else "pending_keyed"
