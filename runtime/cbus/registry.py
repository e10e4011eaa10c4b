"""What generated code tells the runtime: domains, commands and their options.

Generated modules build one `DomainSpec` each and call `register`; the worker and
the generic senders find a command's spec by its class or by its wire kind. This
module is the whole surface generated code depends on, with `API_VERSION` as the
handshake: a generated module records the API it was written for and refuses to
import on a runtime that is older.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, final

from .errors import BusinessError, IncompatibleGeneratedCode
from .names import command_queue, send_channel
from .version import API_VERSION, __version__

__all__ = [
    "API_VERSION",
    "DEFAULT",
    "AsyncHandlers",
    "CommandSpec",
    "DomainSpec",
    "Handlers",
    "Options",
    "PreviousSpec",
    "RateLimit",
    "Retention",
    "ScheduleSpec",
    "domain_of",
    "register",
    "require_api",
    "spec_for",
    "spec_for_kind",
]

DOMAIN_RE = re.compile(r"^[a-z][a-z0-9_]{0,29}$")


def require_api(api: int, generator: str) -> None:
    """Fail the import of generated code written for a newer runtime."""
    if api > API_VERSION:
        raise IncompatibleGeneratedCode(
            f"Generated code from cbgen {generator} needs cbus runtime API {api}, but the "
            f"installed cbus {__version__} provides API {API_VERSION}: upgrade cbus, or "
            f"regenerate with the cbgen that matches cbus {__version__}"
        )


@final
class _SchemaDefault:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<schema default>"

    def __reduce__(self) -> str:
        return "DEFAULT"  # copies and pickles are the one object


DEFAULT: Final = _SchemaDefault()
"""An argument a generated sender did not receive: use the schema's default.

A default that must be built per command (a list, dict, struct, `any` object or
UUID) cannot sit in a signature, so a sender's parameter defaults to this object
instead, and the sender leaves the argument out: the model's `default_factory`
builds the value. Generated modules alias it as `_DEFAULT: typing.Any`, so it is the
default of a parameter of any type; it is a value of no type, so passing it, or
`None` to a field that is not `T?`, is a type error.
"""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`rate_limit: "100/s"`: at most `count` commands start per `per_seconds` seconds."""

    count: int
    per_seconds: int


@dataclass(frozen=True, slots=True)
class Retention:
    """`retention`: seconds a finished command, its audit rows and its archived message
    are kept, counted from when it ended (contract section 9)."""

    completed: int = 7 * 86400
    failed: int = 30 * 86400
    canceled: int = 30 * 86400
    audit: int = 30 * 86400
    """Seconds an audit row of an ended command is kept, from when it was written."""
    archive: int = 30 * 86400
    """Seconds a message in PGMQ's archive (`a_<queue>`) is kept, from `archived_at`."""


class _Undeclared(int):
    """The default `priority` (5) of a schema that declares none: equal to 5, and told
    apart from a declared 5 by its type, so that only domains whose schema declares a
    priority (any value) lease by priority (ADR 0011)."""

    __slots__ = ()


UNDECLARED_PRIORITY: Final[int] = _Undeclared(5)


def declares_priority(options: Options) -> bool:
    """Whether these options come from a schema that declares a `priority`."""
    return type(options.priority) is not _Undeclared


@dataclass(frozen=True, slots=True)
class Options:
    """Delivery options of a command; the schema's domain options merged with its own."""

    max_attempts: int = 5
    backoff: tuple[float, ...] = (1.0, 10.0, 60.0)
    visibility_timeout: int = 30
    timeout: float | None = None
    """Seconds an attempt may run before it fails; None: no limit."""
    unknown_version_grace: float = 3600
    """Seconds a message of a newer version or unknown kind waits for a newer worker
    before it goes to the troubleshooting queue (contract section 8)."""
    priority: int = UNDECLARED_PRIORITY
    """0 to 9, higher first: among due commands of a domain, the order of leasing (5
    when the schema declares none; a domain leases by priority when it declares one)."""
    ordering_key: str | None = None
    """The field whose value orders commands: one at a time per value, in send order."""
    rate_limit: RateLimit | None = None
    """How fast commands may start, across all workers; None: no limit."""
    rate_limit_key: str | None = None
    """The field whose value the rate limit applies per; None: one limit for all."""
    retention: Retention = Retention()
    """How long what a command leaves behind is kept once it ended."""

    def backoff_for(self, attempt: int) -> float:
        """Seconds to wait before the retry that follows failed attempt `attempt` (1-based)."""
        if not self.backoff:
            return 0.0
        return self.backoff[min(attempt, len(self.backoff)) - 1]


@dataclass(frozen=True, slots=True)
class PreviousSpec:
    """An earlier version of a command that the schema keeps under `previous`.

    A message whose `version` header is `version` decodes as `type`; the handler
    method `upgrade_method` (`upgrade_<command>_v<N>`) turns it into the next
    version (the next `previous` entry's type, or the command's own type for the
    last one), so a worker upgrades step by step, oldest first. `mechanical` is
    True when the generated stub's body upgrades by itself (the next version's
    fields all exist with the same type, or have defaults); when False that body
    raises `NotImplementedError`, and a worker whose handlers do not override
    `upgrade_method` must refuse to start, naming it.
    """

    version: int
    type: type[Any]
    upgrade_method: str
    mechanical: bool


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command of a domain, as the schema declares it."""

    domain: str
    name: str
    version: int
    type: type[Any]
    handler_method: str
    options: Options
    result_type: builtins.type[Any] | None = None
    error_type: builtins.type[BusinessError] | None = None
    errors: frozenset[str] = frozenset()
    description: str = ""
    previous: tuple[PreviousSpec, ...] = ()
    """The earlier versions still decoded, oldest first (see `PreviousSpec`)."""
    aliases: tuple[str, ...] = ()
    """Earlier kinds of this command (`<domain>.<Name>`, this domain): renames. A
    message of an alias kind is this command, with this command's versions."""

    # Read on every send and every message: computed once, not per access (0.3 us each
    # as properties).
    kind: str = field(init=False, repr=False, compare=False)
    """`<domain>.<Name>`."""
    queue: str = field(init=False, repr=False, compare=False)
    """The domain's PGMQ queue."""
    channel: str = field(init=False, repr=False, compare=False)
    """The channel a send of this command notifies (`names.send_channel`)."""
    statements: dict[str, bytes] = field(init=False, repr=False, compare=False)
    """The send statements rendered for this command so far, by query name
    (`_send_base.send_statement`): a dict lookup, not `query`'s cache key of five."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", f"{self.domain}.{self.name}")
        object.__setattr__(self, "queue", command_queue(self.domain))
        object.__setattr__(self, "channel", send_channel(self.domain))
        object.__setattr__(self, "statements", {})


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A schedule of a schema file: send `command` at each firing of `cron`.

    `cron` has five fields, read in `timezone` (an IANA name); `command` is the kind
    (`<domain>.<Name>`); `fields` are its fields as JSON data (a `scheduled_at` field
    is filled with the firing time, an aware UTC datetime); after downtime the most
    recent `catch_up` missed firings are sent.
    """

    name: str
    cron: str
    timezone: str
    command: str
    fields: Mapping[str, Any]
    catch_up: int = 1


@dataclass(frozen=True, slots=True)
class DomainSpec:
    """A domain: one PGMQ queue and the commands it carries."""

    name: str
    commands: tuple[CommandSpec, ...]
    options: Options = field(default_factory=Options)
    description: str = ""
    schedules: tuple[ScheduleSpec, ...] = ()

    def __post_init__(self) -> None:
        if not DOMAIN_RE.match(self.name):
            raise ValueError(
                f"Invalid domain name `{self.name}`: expected ^[a-z][a-z0-9_]{{0,29}}$"
            )

    @property
    def queue(self) -> str:
        return command_queue(self.name)

    def by_kind(self) -> Mapping[str, CommandSpec]:
        """Every kind of the domain's messages: each command's, and its aliases (renames).

        A command's own kind wins over another's alias of the same name.
        """
        kinds = {alias: c for c in self.commands for alias in c.aliases}
        kinds.update((c.kind, c) for c in self.commands)
        return kinds


_by_type: dict[type[Any], CommandSpec] = {}
_by_kind: dict[str, CommandSpec] = {}
_domains: dict[str, DomainSpec] = {}


def register(domain: DomainSpec) -> DomainSpec:
    """Make a generated domain known to the generic senders and the worker."""
    earlier = _domains.get(domain.name)
    if earlier is not None:  # registered again (another build of the domain): replaced
        for kind in earlier.by_kind():
            _by_kind.pop(kind, None)
    _domains[domain.name] = domain
    for spec in domain.commands:
        _by_type[spec.type] = spec
    _by_kind.update(domain.by_kind())
    return domain


def spec_for(command: object) -> CommandSpec:
    """The spec of a generated command instance."""
    try:
        return _by_type[type(command)]
    except KeyError:
        raise TypeError(
            f"{type(command).__qualname__} is not a generated cbus command "
            "(import the generated module that defines it)"
        ) from None


def spec_for_kind(kind: str) -> CommandSpec | None:
    """The command a kind names, an alias kind (a rename) included; None if unknown."""
    return _by_kind.get(kind)


def all_domains() -> list[DomainSpec]:
    """Every domain registered so far, by name."""
    return [_domains[name] for name in sorted(_domains)]


class _HandlersBase:
    __cbus_domain__: ClassVar[DomainSpec]


class Handlers(_HandlersBase):
    """Base of every generated sync handler stub (`OrdersHandlers`)."""


class AsyncHandlers(_HandlersBase):
    """Base of every generated async handler stub (`OrdersAsyncHandlers`)."""


def domain_of(handlers: object) -> DomainSpec:
    """The domain a handler object serves, from the generated stub it subclasses."""
    domain = getattr(type(handlers), "__cbus_domain__", None)
    if not isinstance(domain, DomainSpec):
        raise TypeError(
            f"{type(handlers).__qualname__} does not subclass a generated handler stub "
            "(for example `class MyOrders(shop.orders.OrdersHandlers)`)"
        )
    return domain


def stub_of(handlers: object) -> type | None:
    """The generated stub class a handler object's class derives from."""
    return next((b for b in type(handlers).__mro__ if "__cbus_domain__" in b.__dict__), None)


def implemented_methods(handlers: object) -> frozenset[str]:
    """Names of the handler methods a subclass overrides; the others are stubs."""
    cls = type(handlers)
    stub = stub_of(handlers)
    if stub is None:
        return frozenset()
    domain = domain_of(handlers)
    return frozenset(
        c.handler_method
        for c in domain.commands
        if getattr(cls, c.handler_method, None) is not stub.__dict__.get(c.handler_method)
    )
