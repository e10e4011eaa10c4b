"""The I/O-free half of sending: ids, headers, parameters. Shared by Bus and AsyncBus."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import msgspec

from . import codec
from ._ids import new_id
from ._ordering import header_priority, key_of
from ._queries import query
from .errors import DuplicateCommandError, InstallError
from .names import require_uuid
from .pgmq import RawJson, check_queue_name
from .registry import CommandSpec, spec_for
from .tracing import send_context

__all__ = ["Delay", "SendResult", "send_many_params", "send_params", "send_statement"]


class SendResult(msgspec.Struct, frozen=True):
    """What a send returns: ids to find the command again, and its PGMQ msg_id."""

    # A Struct rather than a frozen dataclass: built on every send, in 0.15 us
    # against 0.9 us (a frozen dataclass's __init__ sets each field through object).
    command_id: uuid.UUID
    correlation_id: uuid.UUID
    msg_id: int
    kind: str

    __module__ = "cbus"


_MAX_DELAY = 100 * 365 * 86400.0  # a century: beyond it PostgreSQL's intervals overflow


Delay: TypeAlias = "float | dt.timedelta | dt.datetime | None"
"""A sender's `delay`: seconds or a timedelta from now, or an aware datetime to run at."""


def _delay(delay: Delay) -> tuple[dt.datetime | None, float]:
    """When a command falls due: an aware datetime as given, else seconds from now.

    A datetime already past makes the command due at once (it is not an error: the
    moment may have passed while the caller worked); a negative span is refused.
    """
    if delay is None:
        return None, 0.0
    if isinstance(delay, dt.datetime):
        if delay.tzinfo is None or delay.utcoffset() is None:
            raise ValueError("delay must be seconds or an aware datetime, got a naive datetime")
        return delay, 0.0
    if isinstance(delay, dt.timedelta):
        delay = delay.total_seconds()
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise TypeError(
            f"delay must be seconds, a timedelta or an aware datetime, got {type(delay).__name__}"
        )
    if not math.isfinite(delay) or delay > _MAX_DELAY:
        raise ValueError(f"delay must be a number of seconds up to {_MAX_DELAY:g}, got {delay}")
    if delay < 0:
        raise ValueError(
            f"delay must not be negative, got {delay:g} s: pass 0 (or no delay) to run at "
            "once, or an aware datetime to run at a moment"
        )
    return None, float(delay)


_NOW = (None, 0.0)


def _priority(priority: int | None) -> None:
    """A sender's `priority`: None (the schema's) or an int from 0 to 9, higher first."""
    if priority is None:
        return
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int from 0 to 9, got {type(priority).__name__}")
    if not 0 <= priority <= 9:
        raise ValueError(f"priority must be from 0 to 9 (higher first), got {priority}")


def _headers(
    spec: CommandSpec,
    command_id: uuid.UUID,
    correlation_id: uuid.UUID,
    reply_to: str | None,
    batch_id: uuid.UUID | None,
    causation_id: uuid.UUID | None,
    priority: int | None = None,
    command: object = None,
) -> bytes:
    traceparent, tracestate = send_context(spec)
    headers = codec.Headers(
        kind=spec.kind,
        version=spec.version,
        command_id=command_id,
        correlation_id=correlation_id,
        reply_to=reply_to,
        batch_id=batch_id,
        causation_id=causation_id,
        traceparent=traceparent,
        tracestate=tracestate,
        priority=header_priority(spec, priority),
        ordering_key=key_of(spec, command),
    )
    return codec.encode(headers)


def send_params(
    command: object,
    *,
    command_id: uuid.UUID | None,
    correlation_id: uuid.UUID | None,
    reply_to: str | None,
    delay: Delay,
    batch_id: uuid.UUID | None = None,
    causation_id: uuid.UUID | None = None,
    priority: int | None = None,
) -> tuple[CommandSpec, dict[str, Any]]:
    """Validate a command and build the parameters of the `send` query."""
    # Each check is skipped by the caller when its argument is None (the common
    # send): a call costs more than the test, and every sending thread waits on this
    # one's Python (the GIL, ADR 0010).
    if priority is not None:
        _priority(priority)
    spec = spec_for(command)
    # Text, not RawJson: psycopg dumps a str in C, a RawJson through a Python call
    # (the statement casts both to jsonb).
    message = codec.validate(command).decode()
    if command_id is None:
        command_id = new_id()
    else:
        require_uuid("command_id", command_id)
    if correlation_id is None:
        correlation_id = command_id
    else:
        require_uuid("correlation_id", correlation_id)
    if reply_to is not None:
        check_queue_name(reply_to)
    at, seconds = _NOW if delay is None else _delay(delay)
    # The statement reads the ids, kind and version from the headers, and has the
    # domain and max_attempts as literals (`send_statement`); command_id,
    # correlation_id and queue are the caller's (psycopg passes on only the named).
    return spec, {
        "command_id": command_id,
        "correlation_id": correlation_id,
        "queue": spec.queue,
        "message": message,
        "headers": _headers(
            spec, command_id, correlation_id, reply_to, batch_id, causation_id, priority, command
        ).decode(),
        "at": at,
        "delay": seconds,
    }


def send_statement(
    spec: CommandSpec, params: dict[str, Any], *, own_id: bool, notify: bool
) -> bytes:
    """The `send` statement for `params`: with the conflict check when the caller chose
    the command_id (`own_id`), its `pg_notify` when `notify`, and without `at` and
    `delay` when the command is due at once (`send_now`: 2 parameters, not 4)."""
    name = "send" if own_id else "send_new_ids"
    if params["at"] is None and params["delay"] == 0.0:
        name += "_now"
    if not notify:
        name += "_quiet"
    found = spec.statements.get(name)
    if found is None:
        found = query(name, spec.queue, domain=spec.domain, attempts=spec.options.max_attempts)
        spec.statements[name] = found
    return found


def not_installed(specs: Sequence[CommandSpec], exc: Exception) -> InstallError:
    """A send into a database without cbus, or without the domain's queue: say what to run."""
    domains = ", ".join(sorted({s.domain for s in specs}))
    packages = " and ".join(sorted({s.type.__module__.rpartition(".")[0] for s in specs}))
    primary = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
    return InstallError(
        f"Cannot send to domain {domains}: {primary}; run `cbus db install --domains "
        f"{packages}` (or each domain's generated `install(conn)`) first"
    )


def duplicate(spec: CommandSpec, params: dict[str, Any]) -> DuplicateCommandError:
    return DuplicateCommandError(spec.domain, params["command_id"])


@dataclass(slots=True)
class DomainGroup:
    """The commands of one domain within a send_many, in the order given."""

    domain: str
    queue: str
    positions: list[int]
    log: dict[str, Any]
    queue_params: dict[str, Any]


def send_many_params(
    commands: Sequence[object],
    *,
    command_ids: Sequence[uuid.UUID] | None,
    correlation_id: uuid.UUID | None,
    reply_to: str | None,
    delay: Delay,
    batch_id: uuid.UUID | None,
    causation_id: uuid.UUID | None = None,
    priority: int | None = None,
) -> tuple[list[DomainGroup], list[uuid.UUID], list[uuid.UUID], list[CommandSpec]]:
    """Group commands by domain and build both queries' parameters per group."""
    _priority(priority)
    if command_ids is not None and len(command_ids) != len(commands):
        raise ValueError("command_ids must have one id per command")
    require_uuid("correlation_id", correlation_id)
    ids = list(command_ids) if command_ids is not None else [new_id() for _ in commands]
    if command_ids is not None:
        for command_id in ids:
            require_uuid("command_ids[]", command_id)
    if len(set(ids)) != len(ids):
        raise ValueError("command_ids must be distinct within one send_many")
    if reply_to is not None:
        check_queue_name(reply_to)
    at, seconds = _delay(delay)
    groups: dict[str, DomainGroup] = {}
    specs: list[CommandSpec] = []
    correlations: list[uuid.UUID] = []
    for i, command in enumerate(commands):
        spec = spec_for(command)
        specs.append(spec)
        corr = correlation_id or ids[i]
        correlations.append(corr)
        group = groups.get(spec.domain)
        if group is None:
            group = groups[spec.domain] = DomainGroup(
                domain=spec.domain,
                queue=spec.queue,
                positions=[],
                log={
                    "domain": spec.domain,
                    "reply_to": reply_to,
                    "batch_id": batch_id,
                    "causation_id": causation_id,
                    "command_ids": [],
                    "kinds": [],
                    "versions": [],
                    "max_attempts": [],
                    "correlation_ids": [],
                },
                queue_params={
                    "domain": spec.domain,
                    "queue": spec.queue,
                    "messages": [],
                    "headers": [],
                    "at": at,
                    "delay": seconds,
                    "channel": spec.channel,
                },
            )
        group.positions.append(i)
        log = group.log
        log["command_ids"].append(ids[i])
        log["kinds"].append(spec.kind)
        log["versions"].append(spec.version)
        log["max_attempts"].append(spec.options.max_attempts)
        log["correlation_ids"].append(corr)
        group.queue_params["messages"].append(RawJson(codec.validate(command)))
        headers = _headers(spec, ids[i], corr, reply_to, batch_id, causation_id, priority, command)
        group.queue_params["headers"].append(RawJson(headers))
    return list(groups.values()), ids, correlations, specs
