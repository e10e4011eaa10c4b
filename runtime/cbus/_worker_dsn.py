"""How a worker connects: its sessions' name, and the refusals not worth waiting out."""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = ["unusable_database", "with_application_name"]


_UNUSABLE_DATABASE = ("does not exist", "authentication failed", "no pg_hba.conf entry")


def unusable_database(exc: psycopg.OperationalError) -> str | None:
    """The server's refusal, when it answered that this DSN can never work as it is.

    A server that cannot be reached, is starting or is full is worth waiting for; a
    database or role that does not exist, or credentials it refuses, are not.
    """
    text = str(exc)
    if "FATAL:" in text and any(reason in text for reason in _UNUSABLE_DATABASE):
        return text.strip().splitlines()[0]
    return None


def with_application_name(dsn: str, connect_kwargs: dict[str, Any]) -> str:
    """Name the worker's sessions in pg_stat_activity, unless the user named them.

    A service (`service=` or PGSERVICE) may name them in its file, which only libpq reads.
    """
    params = conninfo_to_dict(dsn)
    if (
        "application_name" in connect_kwargs
        or "application_name" in params
        or "service" in params
        or os.environ.get("PGAPPNAME")
        or os.environ.get("PGSERVICE")
    ):
        return dsn
    return make_conninfo(dsn, application_name="cbus worker")
