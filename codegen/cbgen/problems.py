"""Errors with a position, collected across files, and the words they share.

Each problem becomes one `FILE:LINE:COL: message` line; `hint` adds "did you mean"
where a key or a name is close to a known one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from .load import Map, Mark, Node, Seq, one_line

__all__ = ["Problems", "hint", "joined", "kind_of"]


class Problems:
    """Errors collected across files, reported sorted by file and position."""

    def __init__(self, order: Sequence[str] = ()) -> None:
        self.items: list[tuple[Mark, str]] = []
        self.order = {f: i for i, f in enumerate(order)}

    def add(self, mark: Mark, message: str) -> None:
        self.items.append((mark, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def messages(self) -> list[str]:
        ordered = sorted(
            set(self.items),
            key=lambda p: (
                self.order.get(p[0].file, len(self.order)),
                p[0].file,
                p[0].line,
                p[0].col,
                p[1],
            ),
        )
        # One line each: a key or value echoed from the schema may hold a line break.
        return [one_line(f"{m}: {msg}") for m, msg in ordered]


def kind_of(node: Node | None) -> str:
    if node is None:
        return "nothing"
    if isinstance(node, Map):
        return "mapping"
    if isinstance(node, Seq):
        return "list"
    v = node.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, bytes):
        return "bytes"
    return "str"


def hint(word: str, choices: Iterable[str]) -> str:
    """` (did you mean `x`?)` when a choice is close to `word`, else ``."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def joined(words: Sequence[str]) -> str:
    quoted = [f"`{w}`" for w in words]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]
