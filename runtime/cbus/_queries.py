"""The SQL in `sql/queries.sql`, loaded once and composed per queue."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib.resources import files

from psycopg import sql

from .names import send_channel
from .pgmq import archive_table, queue_table

__all__ = ["query", "raw"]


_TRAILING_COMMENT = re.compile(r"\s+--\s")


def _uncommented(line: str) -> str:
    """A statement's line without its comment, which stays in the file for the reader.

    psycopg caches its parse of a statement of at most 4,096 bytes only: the lease,
    with its comments and indentation, was parsed again on every execute, 30 us of
    the worker's CPU per lease (ADR 0004). A trailing comment goes when no string
    literal is open before it (an even count of quotes).
    """
    if line.lstrip().startswith("--"):
        return ""
    for found in _TRAILING_COMMENT.finditer(line):
        if line[: found.start()].count("'") % 2 == 0:
            return line[: found.start()]
    return line


def _load() -> dict[str, str]:
    text = files(__package__).joinpath("sql", "queries.sql").read_text("utf-8")
    parts = re.split(r"^-- name: (\w+)\n", text, flags=re.MULTILINE)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [_uncommented(line) for line in body.splitlines()]
        queries[name] = "\n".join(line for line in lines if line).strip()
    # Commands whose command_id cbus drew (uuid4) cannot collide with a logged one, so
    # their log row needs no speculative insertion: `ON CONFLICT DO NOTHING` cost 3-5%
    # of a send (ADR 0006). A command_id the caller chose keeps the conflict check.
    for name in ("send", "send_many", "send_many_log"):
        queries[name + "_new_ids"] = queries[name].replace("ON CONFLICT DO NOTHING\n", "")
        assert queries[name + "_new_ids"] != queries[name], name
    # A command due at once (no delay, the common send) needs no `at` and `delay`.
    due = "coalesce(%(at)s::timestamptz, clock_timestamp() + make_interval(secs => %(delay)s))"
    for name in ("send", "send_new_ids"):
        queries[name + "_now"] = queries[name].replace(due, "clock_timestamp()")
        assert queries[name + "_now"] != queries[name], name
    # The same statements without their NOTIFY, for a process that notified the
    # channel a moment ago (`cbus._wake`, ADR 0010).
    for name, notify in (
        ("send", ", pg_notify({channel}, '')"),
        ("send_many", ", (SELECT pg_notify(%(channel)s, '')) AS woken"),
        ("ack_completed", ",\n       pg_notify(%(done_channel)s, '')"),
    ):
        for variant in (name, name + "_new_ids", name + "_now", name + "_new_ids_now"):
            if variant in queries:
                queries[variant + "_quiet"] = queries[variant].replace(notify, "")
                assert queries[variant + "_quiet"] != queries[variant], variant
    # Queue tables made by PGMQ before 1.10 have no last_read_at.
    queries["read_before_pgmq_1_10"] = queries["read"].replace(
        "SET last_read_at = clock_timestamp(),\n        ", "SET "
    )
    assert queries["read_before_pgmq_1_10"] != queries["read"]
    # Ordering keys and priorities (ADR 0011): `read` with another first CTE.
    plain = re.search(r"^WITH leasable AS \(\n.*?\n\),\n", queries["read"], re.S | re.M)
    assert plain is not None
    keyed = queries["lease_keyed"]
    queries["lease_keyed_priority"] = keyed.replace(
        "    ORDER BY l.vt\n",
        """    ORDER BY (coalesce(l.headers ->> 'priority', '5') COLLATE "C") DESC, l.vt\n""",
    )
    assert queries["lease_keyed_priority"] != keyed
    for mode in ("priority", "keyed", "keyed_priority"):
        lease = queries.pop("lease_" + mode) + "\n"
        for read in ("read", "read_before_pgmq_1_10"):
            queries[f"{read}_{mode}"] = queries[read].replace(plain[0], lease)
            assert queries[f"{read}_{mode}"] != queries[read], mode
    condition = queries.pop("pending_keyed_condition")
    assert queries["pending"].endswith("\n)")
    queries["pending_keyed"] = queries["pending"][:-2] + "\n" + condition + "\n)"
    return queries


_QUERIES = _load()


def raw(name: str) -> str:
    return _QUERIES[name]


@lru_cache(maxsize=1024)
def query(
    name: str, queue: str = "", limit: int = 0, *, domain: str = "", attempts: int = 0
) -> bytes:
    """The named query, with `{q}` and `{a}` bound to the queue's PGMQ tables (`{qname}`:
    the queue table's name as a string literal); in the send statements, `{domain}`,
    `{channel}` (the domain's) and `{attempts}` (a kind's max_attempts) are literals.

    Rendered to bytes once: psycopg renders a `sql.Composed` again on every execute
    (5.5 us for the send statement, a tenth of what the sender's Python costs).
    Queue names are checked by `queue_table`, so their quoting needs no connection.
    `{limit}` becomes a literal: a plan prepared with `LIMIT $1` guesses the row
    count, and guessed wrong for the lease (ADR 0006).
    """
    text = _QUERIES[name]
    if "{q}" in text or "{a}" in text or "{limit}" in text:
        for what, value in (("limit", limit), ("attempts", attempts)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{what} must be a non-negative int, got {value!r}")
        text = (
            sql.SQL(text)
            .format(
                q=queue_table(queue),
                a=archive_table(queue),
                qname=sql.Literal(queue_table(queue).as_string(None)),
                limit=sql.Literal(limit),
                domain=sql.Literal(domain),
                channel=sql.Literal(send_channel(domain)),
                attempts=sql.Literal(attempts),
            )
            .as_string(None)
        )
    # Without indentation: a shorter text is one psycopg caches the parse of (above).
    return "\n".join(line.strip() for line in text.splitlines()).encode()
