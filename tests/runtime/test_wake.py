"""A process's NOTIFY window (cbus._wake): one per channel of each database."""

from __future__ import annotations

import weakref
from typing import Any

import psycopg
from cbus import _wake


def test_connections_to_one_database_share_a_window(dsn: str) -> None:
    with psycopg.connect(dsn) as a, psycopg.connect(dsn) as b:
        assert _wake.due(a, "cbus_test_share")
        assert not _wake.due(b, "cbus_test_share")  # within the window: no second NOTIFY
        assert not _wake.due(a, "cbus_test_share")
        assert _wake.due(a, "cbus_test_other")  # another channel has its own


def test_another_database_has_its_own_window(dsn: str, empty_db: str) -> None:
    with psycopg.connect(dsn) as a, psycopg.connect(empty_db) as b:
        assert _wake.due(a, "cbus_test_two_dbs")
        assert _wake.due(b, "cbus_test_two_dbs")


def test_a_reused_id_is_not_taken_for_its_old_connection(dsn: str, empty_db: str) -> None:
    """A closed connection's id may be given to a new one: its cached entry is not used."""
    with psycopg.connect(dsn) as a, psycopg.connect(empty_db) as b:
        assert _wake.due(a, "cbus_test_reuse")
        gone: Any = type("Gone", (), {})()
        # As if `b` had the id of a connection to `dsn` that is gone now.
        _wake._by_conn[id(b)] = (weakref.ref(gone), _wake._channels(a))
        del gone
        assert _wake.due(b, "cbus_test_reuse")  # b's own database: not within a's window
