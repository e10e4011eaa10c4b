# Generated from _rate_async.py by tools/async_to_sync.py.
# DO NOT EDIT: change _rate_async.py instead.
"""Rate limits on the worker's connection: take starts for a leased batch (ADR 0012).

Called right after a lease, only for a domain with limited kinds (`DomainRuntime.rate`):
one statement (`rate_take`) takes a start per limited command from its bucket and puts
the commands over the limit back in the queue, due when their turn comes, without
counting the read as an attempt. What comes back runs; what was held back does not.
"""

from __future__ import annotations

from ._handler_conn import HandlerConnection
from ._queries import query
from ._rate_limit import RateLimits, take_params
from ._worker_triage import Delivery

__all__ = ["take_starts"]


def take_starts(
    conn: HandlerConnection, domain: str, queue: str, limits: RateLimits, ready: list[Delivery]
) -> tuple[list[Delivery], list[float]]:
    """The deliveries that may start now, and in how many seconds each held back is due."""
    params = take_params(domain, limits, ready)
    if params is None:
        return ready, []
    cur = conn.execute(query("rate_take", queue), params)
    rows = cur.fetchall()
    if not rows:
        return ready, []
    held = {row[0] for row in rows}
    return [d for d in ready if d.msg_id not in held], [max(0.0, float(r[1])) for r in rows]
