"""The `retention` option: how long finished commands, their audit rows and archived
messages are kept (contract section 9), as whole seconds per key."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from .defs import DURATION_UNITS, RETENTION_KEYS
from .load import Map, Mark, Node, Scalar
from .problems import kind_of


class FileChecker(Protocol):
    """What of `per_file.FileChecker` this module uses (no import: no circle)."""

    def err(self, mark: Mark, message: str) -> None: ...
    def keys(self, node: Map, allowed: Sequence[str]) -> None: ...
    def mapping(self, node: Node | None, what: str) -> Map | None: ...


__all__ = ["read_retention"]

DURATION_RE = re.compile(r"^([0-9]{1,12})([smhd])$")


def _duration(c: FileChecker, node: Node, what: str) -> int | None:
    """A whole number of seconds > 0, or `<int>s|m|h|d` (`90s`, `12h`, `7d`)."""
    v = node.value if isinstance(node, Scalar) else None
    seconds: int | None = None
    if isinstance(v, int) and not isinstance(v, bool):
        seconds = v
    elif isinstance(v, str):
        found = DURATION_RE.match(v.strip())
        if found is not None:
            seconds = int(found.group(1)) * DURATION_UNITS[found.group(2)]
    if seconds is not None and seconds > 0:
        return seconds
    shown = node.text if isinstance(node, Scalar) and v is not None else kind_of(node)
    c.err(
        node.mark,
        f"Expected a duration (whole seconds > 0, or `<int>s|m|h|d` such as `90s`, `12h`, "
        f"`7d`) for `{what}`, got `{shown}`",
    )
    return None


def read_retention(c: FileChecker, node: Node) -> dict[str, int] | None:
    """The keys a schema sets, in seconds; None when nothing valid was given."""
    m = c.mapping(node, "`retention`")
    if m is None:
        return None
    c.keys(m, RETENTION_KEYS)
    out: dict[str, int] = {}
    for key in RETENTION_KEYS:
        v = m.get(key)
        if v is not None:
            seconds = _duration(c, v, f"retention.{key}")
            if seconds is not None:
                out[key] = seconds
    return out
