"""The statements as sent: comments left in the file, short enough for psycopg's cache."""

from __future__ import annotations

import pytest
from cbus._queries import _uncommented, query

try:
    from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH
except ImportError:  # a private name of psycopg 3.1-3.3
    MAX_CACHED_STATEMENT_LENGTH = 4096

# The longest queue name PGMQ takes (47 characters): `{q}` and `{a}` grow with it.
LONGEST_QUEUE = "d" * 37 + "__commands"


def test_comments_stay_in_the_file_and_out_of_the_statement() -> None:
    assert _uncommented("-- a whole line") == ""
    assert _uncommented("    -- an indented line") == ""
    assert _uncommented("SELECT 1  -- why") == "SELECT 1"
    assert _uncommented("SELECT '--' AS dashes") == "SELECT '--' AS dashes"
    assert _uncommented("SELECT 'a -- b' AS text  -- why") == "SELECT 'a -- b' AS text"
    assert _uncommented("SELECT a--b") == "SELECT a--b"  # no space after: not stripped


@pytest.mark.parametrize(
    "name",
    [
        "read",
        "read_before_pgmq_1_10",
        "read_priority",
        "read_keyed",
        "read_keyed_priority",
        "ack_completed",
        "send",
        "send_now",
        "send_many",
        "rate_take",
    ],
)
def test_hot_statements_fit_psycopgs_parse_cache(name: str) -> None:
    """psycopg parses a longer statement again on every execute: 30 us per lease."""
    text = query(name, LONGEST_QUEUE, 100, domain=LONGEST_QUEUE[:-10], attempts=100)
    assert len(text) <= MAX_CACHED_STATEMENT_LENGTH, len(text)
    assert b"--" not in text
