"""Ordering keys and priorities: what a sender writes, and which lease a domain uses.

Contract section 13. I/O-free: the sender asks it for a command's `ordering_key` and
`priority` headers, the worker for the lease statement of a domain, `install` for the
indexes that statement needs (ADR 0011). A domain that uses neither option keeps
cbus's plain lease and gets no index: it pays nothing for them.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any, Literal

from psycopg import sql

from . import codec
from ._queries import raw
from .pgmq import archive_table, queue_table
from .registry import CommandSpec, DomainSpec, all_domains, declares_priority

__all__ = [
    "DEFAULT_PRIORITY",
    "LeaseMode",
    "domain_indexes",
    "header_priority",
    "key_of",
    "lease_mode",
]

DEFAULT_PRIORITY = 5
_MAX_KEY = 200  # a longer key text is hashed: a btree entry holds about 2.7 kB

LeaseMode = Literal["plain", "priority", "keyed", "keyed_priority"]


def header_priority(spec: CommandSpec, priority: int | None) -> int | None:
    """The `priority` header of a command: the sender's, else its schema's; None for 5.

    A message without the header has the default priority, so the headers of a domain
    that uses no priorities stay as they were.
    """
    value = spec.options.priority if priority is None else priority
    return None if value == DEFAULT_PRIORITY else value


@lru_cache(maxsize=1024)
def _key_attribute(spec: CommandSpec) -> tuple[str, str] | None:
    """(the attribute holding the key, the scope prefix) of a command, or None.

    A domain's `ordering_key` orders all its commands with that field together; a
    command's own orders only that command's messages, so its key text starts with
    the kind.
    """
    field = spec.options.ordering_key
    if field is None:
        return None
    domain = _domain_key(spec.domain)
    scope = "" if domain == field else spec.kind + ":"
    fields = getattr(spec.type, "__dataclass_fields__", None) or {}
    attribute = field if field in fields or field + "_" not in fields else field + "_"
    return attribute, scope


def _domain_key(domain: str) -> str | None:
    for d in all_domains():
        if d.name == domain:
            return d.options.ordering_key
    return None


def key_of(spec: CommandSpec, command: object) -> str | None:
    """The `ordering_key` header of a command: its key field's value as JSON text.

    JSON text keeps `1` and `"1"` apart and gives each key type one form (cbgen
    allows only such fields). A text longer than 200 characters is replaced by its
    SHA-256, so a key always fits the queue's index.
    """
    if spec.options.ordering_key is None:  # every send asks: no cache lookup then
        return None
    found = _key_attribute(spec)
    if found is None:
        return None
    attribute, scope = found
    text = scope + codec.encode(getattr(command, attribute)).decode()
    if len(text) > _MAX_KEY:
        text = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def _uses_priority(domain: DomainSpec) -> bool:
    return declares_priority(domain.options) or any(
        declares_priority(c.options) for c in domain.commands
    )


def _uses_keys(domain: DomainSpec) -> bool:
    return domain.options.ordering_key is not None or any(
        c.options.ordering_key is not None for c in domain.commands
    )


def lease_mode(domain: DomainSpec) -> LeaseMode:
    """Which lease statement serves a domain (`plain`: cbus's own, unchanged)."""
    keyed, ranked = _uses_keys(domain), _uses_priority(domain)
    if keyed:
        return "keyed_priority" if ranked else "keyed"
    return "priority" if ranked else "plain"


_INDEXES: dict[LeaseMode, tuple[str, ...]] = {
    "plain": (),
    "priority": ("index_priority",),
    "keyed": ("index_ordering_key", "index_ordering_key_archive"),
    "keyed_priority": ("index_priority", "index_ordering_key", "index_ordering_key_archive"),
}


def domain_indexes(domain: DomainSpec) -> list[tuple[sql.Composed, Any]]:
    """The statements that create the indexes a domain's lease needs (none when plain).

    Each creates its index only if missing, named after the queue: installing again, or
    a domain that starts using an option later, adds only what is missing.
    """
    q, a = queue_table(domain.queue), archive_table(domain.queue)
    out: list[tuple[sql.Composed, Any]] = []
    for name in _INDEXES[lease_mode(domain)]:
        table = "a" if name.endswith("archive") else "q"
        suffix = "cbus_prio" if name == "index_priority" else "cbus_key"
        index = sql.Identifier(f"{table}_{domain.queue}_{suffix}")
        out.append((sql.SQL(raw(name)).format(q=q, a=a, name=index), None))
    return out
