"""The worker class, made of its layers: state, leases, consume, supervise.

This is the async source: `tools/async_to_sync.py` writes the sync twin, `_worker.py`,
from it and from the layers' `*_async.py` modules. `cbus.Worker` combines both.
"""

from __future__ import annotations

from ._supervise_async import Supervisor

__all__ = ["AsyncWorker"]


class AsyncWorker(Supervisor):
    """Runs the handlers of one or more domains until stopped.

    `handlers` are instances of subclasses of generated async stubs
    (`OrdersAsyncHandlers`). `concurrency` consumers each lease up to `batch_size`
    messages at a time. Wakes on NOTIFY from the senders, and polls every
    `poll_interval` seconds besides, since delayed messages and other PGMQ clients
    send no notification.

    With `savepoints=False`, the handlers of a batch share its transaction without a
    savepoint each: faster for handlers that write (ADR 0002), but a handler that
    fails after a neighbour wrote rolls the batch back, and the batch replays one
    message per transaction, running its neighbours' handlers again.
    """

    __module__ = "cbus"
