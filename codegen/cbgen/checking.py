"""What the checks of one part of a schema file use of `per_file.FileChecker`.

Typed by shape, so `evolution` and `schedules`, which `per_file` calls, need not
import it back (no import circle).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .defs import FieldDef
from .load import Map, Mark, Node

__all__ = ["FileChecker"]


class FileChecker(Protocol):
    """The per-file checker's helpers: errors at a node, keys, and typed reads."""

    def err(self, mark: Mark, message: str) -> None: ...
    def keys(self, node: Map, allowed: Sequence[str]) -> None: ...
    def mapping(self, node: Node | None, what: str) -> Map | None: ...
    def text(self, node: Node | None, what: str) -> str | None: ...
    def integer(self, node: Node, what: str, minimum: int) -> int | None: ...
    def description(self, node: Map) -> str: ...
    def fields(self, node: Node | None, owner: str, *, command: bool) -> list[FieldDef]: ...
