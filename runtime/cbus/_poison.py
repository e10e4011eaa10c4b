"""A message that must not run, and why: what triage hands to the set-aside path."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

__all__ = ["Poison"]


@dataclass(slots=True)
class Poison:
    """A message that must not run: why, and what to do with it."""

    msg_id: int
    read_ct: int
    reason: str
    code: str
    command_id: uuid.UUID | None
    drop: bool = False  # a duplicate of a command that already ended: delete, do not archive
    kind: str | None = None
    version: int = 0
    grace: float | None = None  # set: leave for a newer worker this long after sending
    delay: float = 0.0  # then look again this often
