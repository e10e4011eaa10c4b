"""PGMQ access: queue names, and the SQL cbus runs against PGMQ's functions and tables.

PGMQ's delete, archive and set_vt take only a msg_id, so a worker whose visibility
timeout ran out could acknowledge a message another worker now holds. The
acknowledgements here therefore act on PGMQ's queue table directly and match both
msg_id and read_ct: a message read again since is left alone.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
from psycopg import abc, postgres, sql
from psycopg.adapt import Dumper, Loader, PyFormat
from psycopg.pq import Format

__all__ = [
    "RawJson",
    "dump_raw_json",
    "archive_table",
    "check_queue_name",
    "queue_table",
    "register_adapters",
    "reply_queue_problem",
]

_QUEUE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,46}$")


def check_queue_name(name: str) -> str:
    """Refuse a queue name PGMQ would not accept or that could not be an identifier."""
    if not isinstance(name, str) or not _QUEUE_RE.match(name):
        raise ValueError(
            f"Invalid queue name {name!r}: expected lowercase letters, digits and `_`, "
            "at most 47 characters"
        )
    return name


def reply_queue_problem(name: str) -> str | None:
    """Why a worker refuses to reply to this queue, or None (the README's "Wire format").

    A reply queue is a PGMQ queue that is no domain's command queue: a reply written
    there would reach that domain's workers as a command.
    """
    if not isinstance(name, str) or not _QUEUE_RE.match(name):
        return "the reply queue's name is not a PGMQ queue name"
    if name.endswith("__commands"):
        return "a reply queue must not be a command queue (`__commands`)"
    return None


@lru_cache(maxsize=256)
def queue_table(queue: str) -> sql.Identifier:
    return sql.Identifier("pgmq", "q_" + check_queue_name(queue))


@lru_cache(maxsize=256)
def archive_table(queue: str) -> sql.Identifier:
    return sql.Identifier("pgmq", "a_" + check_queue_name(queue))


_JSONB_OID = postgres.types["jsonb"].oid
_C = TypeVar("_C", psycopg.Connection[Any], psycopg.AsyncConnection[Any])


class RawJson(bytes):
    """JSON text already encoded by msgspec, sent to PostgreSQL as jsonb without re-encoding."""

    __slots__ = ()


class _RawJsonDumper(Dumper):
    format = Format.TEXT
    oid = _JSONB_OID

    def dump(self, obj: Any) -> bytes:
        return obj  # type: ignore[no-any-return]


class _RawJsonLoader(Loader):
    """Hands jsonb to msgspec as bytes: no JSON parse in psycopg."""

    format = Format.TEXT

    def load(self, data: abc.Buffer) -> bytes:
        return bytes(data)


def register_adapters(context: abc.AdaptContext) -> None:
    """Make a cursor read jsonb as raw bytes, for msgspec to decode."""
    context.adapters.register_loader("jsonb", _RawJsonLoader)


def dump_raw_json(conn: _C) -> _C:
    """Make sure `conn` sends RawJson as jsonb, and return it.

    Registered globally below, RawJson reaches every connection that shares psycopg's
    global adapters; a connection whose adapters a framework customised before cbus
    loaded (Django's backend, SQLAlchemy's dialect) holds a copy without it, and would
    send the bytes as bytea.
    """
    adapters = conn.adapters
    if adapters.get_dumper(RawJson, PyFormat.TEXT) is not _RawJsonDumper:
        adapters.register_dumper(RawJson, _RawJsonDumper)
    return conn


# RawJson is cbus's own type: dumping it as jsonb everywhere changes nothing else.
psycopg.adapters.register_dumper(RawJson, _RawJsonDumper)
