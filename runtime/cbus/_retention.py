"""Retention, I/O-free: what `install_domain` records, and what a pruner pass reports.

The pruner (`_pruner_async` -> `_pruner`) deletes, in batches, what each domain's
recorded retention (`cbus.retention`, one row per kind and one, kind '', for the
domain's own options) says is due; ADR 0009.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .registry import DomainSpec, Retention

__all__ = [
    "BATCH",
    "PRUNE_LOCK_KEY",
    "WHAT",
    "Pruned",
    "Span",
    "retention_rows",
    "span_of",
]

PRUNE_LOCK_KEY = 0x63627570  # "cbup": one pruner per database
BATCH = 1000
"""Rows a pruner statement visits at most: each is its own short transaction."""
WHAT = ("completed", "failed", "canceled", "audit", "archive")
"""What a pass counts per domain: commands by status, audit rows, archived messages."""


def retention_rows(domain: DomainSpec) -> list[dict[str, Any]]:
    """The rows of `cbus.retention` for a domain: its own, then each kind (aliases too)."""
    rows = [{"domain": domain.name, "kind": "", **dataclasses.asdict(domain.options.retention)}]
    for spec in domain.commands:
        kept = dataclasses.asdict(spec.options.retention)
        for kind in (spec.kind, *spec.aliases):
            rows.append({"domain": domain.name, "kind": kind, **kept})
    return rows


@dataclass(frozen=True, slots=True)
class Span:
    """The shortest retention of a domain, per table: nothing younger is visited."""

    commands: int
    audit: int
    archive: int


def span_of(rows: Iterable[tuple[str, int, int, int, int, int]]) -> Span:
    """From `prune_retention` rows (kind, completed, failed, canceled, audit, archive);
    a domain without its own row keeps the defaults for kinds it did not record."""
    default = Retention()
    found = list(rows)
    if not any(kind == "" for kind, *_ in found):
        found.append(("", *dataclasses.astuple(default)))
    return Span(
        commands=min(min(r[1], r[2], r[3]) for r in found),
        audit=min(r[4] for r in found),
        archive=min(r[5] for r in found),
    )


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one pass removed (or, dry, would remove) in a domain: rows per `WHAT`."""

    domain: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())
