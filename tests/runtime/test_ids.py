"""Command ids cbus draws: version 7 UUIDs, distinct across threads and forks, in time order."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from types import ModuleType
from typing import Any

import cbus
import psycopg
from cbus import _ids

_RANDOM = (0x0FFF << 64) | ((1 << 62) - 1)  # the 74 random bits of a version 7 id


def test_an_id_is_a_version_7_uuid_of_this_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    made = _ids.new_id()
    after = time.time_ns() // 1_000_000
    assert isinstance(made, uuid.UUID)
    assert (made.version, made.variant) == (7, uuid.RFC_4122)
    assert before <= made.int >> 80 <= after
    # The same value a UUID built the documented way has, in every form.
    twin = uuid.UUID(str(made))
    assert twin == made and hash(twin) == hash(made) and twin.bytes == made.bytes
    assert made.is_safe is uuid.SafeUUID.unknown


def test_ids_drawn_a_millisecond_apart_sort_in_that_order() -> None:
    first = _ids.new_id()
    time.sleep(0.002)
    assert _ids.new_id() > first


def test_threads_drawing_at_once_never_get_the_same_id() -> None:
    # Many pools' worth per thread, so threads also race on refilling the pool.
    per, threads = 3000, 8
    found: list[list[uuid.UUID]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads)

    def draw(out: list[uuid.UUID]) -> None:
        barrier.wait()
        out.extend(_ids.new_id() for _ in range(per))

    workers = [threading.Thread(target=draw, args=(out,)) for out in found]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    every = [u for out in found for u in out]
    assert len(every) == per * threads
    assert len({u.int & _RANDOM for u in every}) == len(every)


def _child(conn: Any) -> None:
    conn.send([_ids.new_id().int & _RANDOM for _ in range(50)])


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    _ids.new_id()  # the pool is part-used when the child is forked
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_child, args=(theirs,))
    child.start()
    from_child = ours.recv()
    child.join(timeout=30)
    mine = [_ids.new_id().int & _RANDOM for _ in range(50)]
    assert child.exitcode == 0
    assert not set(from_child) & set(mine)


def test_a_sent_command_gets_a_version_7_id_unless_given_one(
    conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    drawn = testbus.send_echo(conn, n=1)
    assert drawn.command_id.version == 7 and drawn.correlation_id == drawn.command_id
    own = uuid.uuid4()
    given = testbus.send_echo(conn, n=2, command_id=own)
    assert given.command_id == own
    sent = cbus.send_many(conn, [testbus.Echo(n=3), testbus.Echo(n=4)])
    assert [s.command_id.version for s in sent] == [7, 7]
    conn.commit()
    record = cbus.get_command(conn, "testbus", drawn.command_id)
    assert record is not None and record.command_id == drawn.command_id
