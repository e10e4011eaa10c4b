"""Rate limits as a worker applies them, I/O-free: which bucket each leased command takes from.

A command whose options carry a `rate_limit` takes one start from a bucket (ADR 0012):
the domain's when the limit is the domain's own (the command sets none of its own, or
sets the same one), else its kind's; with a `rate_limit_key`, one bucket per value of
that field (its JSON text). A domain none of whose commands is limited has no
`RateLimits` at all, so its worker runs no statement and no loop for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from . import _versions as versions
from .registry import CommandSpec, DomainSpec, Options

__all__ = ["Limit", "RateLimits", "take_params"]

_DOMAIN_SCOPE = "*"  # the bucket name of a domain-wide limit, never a kind (kinds have a dot)


@dataclass(frozen=True, slots=True)
class Limit:
    """One kind's limit: its bucket scope, the seconds between starts, the key field."""

    scope: str
    interval: float
    key: str | None

    def bucket(self, command: Any) -> str:
        """The bucket a command of this kind takes from (per key value when keyed)."""
        if self.key is None:
            return self.scope
        value = getattr(command, _attribute(type(command), self.key), None)
        return f"{self.scope}:{msgspec.json.encode(value).decode()}"


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The limited kinds of one domain (aliases included), by kind."""

    by_kind: dict[str, Limit]

    @classmethod
    def of(cls, spec: DomainSpec) -> RateLimits | None:
        by_kind: dict[str, Limit] = {}
        for kind, command in versions.kinds_of(spec).items():
            limit = _limit(spec.options, command)
            if limit is not None:
                by_kind[kind] = limit
        return cls(by_kind) if by_kind else None


def _limit(domain: Options, command: CommandSpec) -> Limit | None:
    opts = command.options
    if opts.rate_limit is None:
        return None
    shared = opts.rate_limit == domain.rate_limit and opts.rate_limit_key == domain.rate_limit_key
    return Limit(
        scope=_DOMAIN_SCOPE if shared else command.kind,
        interval=opts.rate_limit.per_seconds / opts.rate_limit.count,
        key=opts.rate_limit_key,
    )


_ATTRIBUTES: dict[tuple[type[Any], str], str] = {}


def _attribute(type_: type[Any], field: str) -> str:
    """The Python attribute of schema field `field` (a msgspec Struct may rename it)."""
    found = _ATTRIBUTES.get((type_, field))
    if found is None:
        names = getattr(type_, "__struct_fields__", ())
        encoded = getattr(type_, "__struct_encode_fields__", names)
        found = dict(zip(encoded, names, strict=False)).get(field, field)
        _ATTRIBUTES[(type_, field)] = found
    return found


def take_params(domain: str, limits: RateLimits, ready: Sequence[Any]) -> dict[str, Any] | None:
    """The `rate_take` parameters for the limited deliveries of a batch; None: none is.

    `ready` holds `_worker_triage.Delivery` objects (not imported: triage imports the
    domain runtime, which imports this module).
    """
    msg_ids: list[int] = []
    read_cts: list[int] = []
    command_ids: list[Any] = []
    buckets: list[str] = []
    intervals: list[float] = []
    for d in ready:
        limit = limits.by_kind.get(d.headers.kind)
        if limit is None:
            continue
        msg_ids.append(d.msg_id)
        read_cts.append(d.read_ct)
        command_ids.append(d.headers.command_id)
        buckets.append(limit.bucket(d.command))
        intervals.append(limit.interval)
    if not msg_ids:
        return None
    return {
        "domain": domain,
        "msg_ids": msg_ids,
        "read_cts": read_cts,
        "command_ids": command_ids,
        "buckets": buckets,
        "intervals": intervals,
    }
