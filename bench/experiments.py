"""Ideas from issue 6, measured from outside the runtime: what a worker loop could do.

Each loop drains logged commands on one connection, as one consumer of
`cbus.Worker` does: lease a batch of 100 with cbus's own `read` query (which also
records each command), decode it with cbus's own `triage` (msgspec, jsonb as
bytes), run a handler per message, and acknowledge the batch with cbus's own
`ack_completed` statement in the handlers' transaction. Only the part under test
changes from one loop to the next. Run by `make bench`, or alone:

    .venv-bench/bin/python bench/experiments.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import env
import floor
import msgspec
import psycopg
import sends
from cbus import codec
from cbus._queries import query, raw
from cbus._send_base import send_many_params, send_params
from cbus._worker_domain import DomainRuntime, read_query
from cbus._worker_failure import ack_params
from cbus._worker_triage import Delivery, triage
from cbus.pgmq import queue_table, register_adapters
from env import Result
from psycopg import sql

INSERT = "INSERT INTO bench_effect (command_id, seq) VALUES (%s, %s)"

# HOT updates of the command log: an update is HOT (no new index entries) only when
# it changes no indexed column, counting the columns of a partial index's WHERE, and
# the row's page has room. cbus's `command_troubleshooting` index covers `updated_at`
# and filters on `status`, which every update changes; a fill factor of 50 leaves room.
BLOCKING_INDEXES = """
SELECT indexname, indexdef FROM pg_indexes
WHERE schemaname = 'cbus' AND tablename = 'command' AND indexname NOT LIKE '%pkey'
  AND (indexdef LIKE '%status%' OR indexdef LIKE '%updated_at%')
"""
Handler = Callable[[psycopg.Connection[Any], Delivery], None]


def noop(conn: psycopg.Connection[Any], d: Delivery) -> None:
    return None


def savepoint_release(conn: psycopg.Connection[Any], d: Delivery) -> None:
    conn.execute("SAVEPOINT h")
    conn.execute("RELEASE SAVEPOINT h")


def insert(conn: psycopg.Connection[Any], d: Delivery) -> None:
    conn.execute(INSERT, (d.headers.command_id, d.command.seq))


def savepoint_insert(conn: psycopg.Connection[Any], d: Delivery) -> None:
    """What the worker does today for a handler that writes: a savepoint, then its statement."""
    conn.execute("SAVEPOINT h")
    conn.execute(INSERT, (d.headers.command_id, d.command.seq))


def savepoint_insert_release(conn: psycopg.Connection[Any], d: Delivery) -> None:
    conn.execute("SAVEPOINT h")
    conn.execute(INSERT, (d.headers.command_id, d.command.seq))
    conn.execute("RELEASE SAVEPOINT h")


def ack_unnest(
    conn: psycopg.Connection[Any], runtime: DomainRuntime, done: list[Delivery], audit: bool
) -> None:
    """cbus's `ack_completed`: one statement deletes the messages and completes their log rows."""
    row = conn.execute(
        query("ack_completed", runtime.queue), ack_params(runtime, done, audit)
    ).fetchone()
    assert row is not None and row[0] == len(done), (row, len(done))


def ack_quiet(
    conn: psycopg.Connection[Any], runtime: DomainRuntime, done: list[Delivery], audit: bool
) -> None:
    """`ack_completed` without its pg_notify (for reply waiters), to price the NOTIFY."""
    text = raw("ack_completed")
    if "%(done_channel)s" in text:
        text = text.replace(",\n       pg_notify(%(done_channel)s, '')", "")
    stmt = sql.SQL(text).format(q=queue_table(runtime.queue)).as_string().encode()  # type: ignore[arg-type]
    params = ack_params(runtime, done, audit)
    params.pop("done_channel", None)
    row = conn.execute(stmt, params).fetchone()
    assert row is not None and row[0] == len(done), (row, len(done))


def ack_executemany(
    conn: psycopg.Connection[Any], runtime: DomainRuntime, done: list[Delivery], audit: bool
) -> None:
    """The same writes as one statement per message, through `executemany`."""
    with conn.cursor() as cur:
        cur.executemany(
            f"DELETE FROM pgmq.q_{runtime.queue} WHERE msg_id = %s AND read_ct = %s",
            [(d.msg_id, d.read_ct) for d in done],
        )
        cur.executemany(
            "UPDATE cbus.command SET status = 'COMPLETED', result = %s,"
            " updated_at = clock_timestamp(), finished_at = clock_timestamp()"
            " WHERE domain = %s AND command_id = %s",
            [(d.result, runtime.spec.name, d.headers.command_id) for d in done],
        )


def drain(
    dsn: str,
    runtime: DomainRuntime,
    n: int,
    *,
    handler: Handler = noop,
    ack: Callable[..., None] = ack_unnest,
    audit: bool = False,
    pipeline: bool = False,
    chunk: int = 100,
    read_in_transaction: bool = False,
    prepare_threshold: int | None = 5,
    read_plain: bool = False,
    sync_each: bool = False,
) -> float:
    """Drain n logged commands with one loop variant; returns messages per second."""
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=prepare_threshold) as conn:
        done = 0
        read = read_query(runtime.queue, 100, True)

        plain = (
            "SELECT msg_id, read_ct, message, headers, true, true, 5, false, vt"
            f" FROM pgmq.read('{runtime.queue}', 30, 100)"
        )

        def lease() -> list[Delivery]:
            if read_plain:
                cur = conn.cursor()
                register_adapters(cur)  # pgmq.read's jsonb as bytes
                cur.execute(plain)
            else:  # as the worker reads its lease: binary rows, bytea message and headers
                cur = conn.cursor(binary=True)
                cur.execute(read, runtime.read_params(audit))
            ready, poison = triage(runtime, cur.fetchall())
            assert not poison, poison
            return ready

        def run() -> None:
            nonlocal done
            while done < n:
                if read_in_transaction:
                    with conn.transaction():
                        ready = lease()
                        for d in ready:
                            handler(conn, d)
                        if ready:
                            ack(conn, runtime, ready, audit)
                    if not ready:
                        break
                    done += len(ready)
                    continue
                ready = lease()
                if not ready:
                    break
                for start in range(0, len(ready), chunk):
                    part = ready[start : start + chunk]
                    with (
                        conn.pipeline() if pipeline else nullcontext() as pipe,
                        conn.transaction(),
                    ):
                        for d in part:
                            handler(conn, d)
                            if sync_each and pipe is not None:
                                pipe.sync()
                        ack(conn, runtime, part, audit)
                done += len(ready)

        result = env.rate(n, run)
        assert done == n, (done, n)
        return result


def decode_rows(dsn: str, runtime: DomainRuntime, n: int, *, as_bytes: bool) -> float:
    """Load and decode n messages: jsonb as bytes into msgspec, or parsed by psycopg first."""
    ping = runtime.spec.commands[0].type
    headers_type = codec.Headers
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.cursor()
        if as_bytes:
            register_adapters(cur)
        stmt = f"SELECT message, headers FROM pgmq.q_{runtime.queue} ORDER BY msg_id LIMIT 100"
        decoder = msgspec.json.Decoder(ping)
        headers_decoder = msgspec.json.Decoder(headers_type)

        def run() -> None:
            for _ in range(n // 100):
                rows = cur.execute(stmt).fetchall()
                if as_bytes:
                    for message, headers in rows:
                        decoder.decode(message)
                        headers_decoder.decode(headers)
                else:
                    for message, headers in rows:
                        msgspec.convert(message, ping, strict=False)
                        msgspec.convert(headers, headers_type, strict=False)

        return env.rate(n, run)


_ATTEMPTS = 5  # bench/schemas/bench.yaml's max_attempts


def _send_params(command: Any) -> dict[str, Any]:
    """`send_params`, and what the variants below that are not cbus's statement bind."""
    params = send_params(command, command_id=None, correlation_id=None, reply_to=None, delay=None)
    return {**params[1], "domain": "bench", "max_attempts": _ATTEMPTS, "channel": "cbus_bench"}


def single_send_parts(dsn: str, bench: Any, n: int) -> dict[str, float]:
    """What one cbus send costs beyond pgmq.send: its log row, its NOTIFY, its transaction.

    Each variant has its own connection; they take turns every 100 sends. Statements
    with "ready" run the `send` query on parameters built beforehand.
    """
    table = queue_table(env.QUEUE)
    text = raw("send")
    without_notify = text.replace(", pg_notify({channel}, '')", "")
    assert without_notify != text
    queue_only = (
        "INSERT INTO {q} (vt, message, headers) SELECT coalesce(%(at)s::timestamptz,"
        " clock_timestamp() + make_interval(secs => %(delay)s)), %(message)s, %(headers)s"
        " RETURNING msg_id, pg_notify(%(channel)s, '')"
    )
    through_pgmq_send = (
        text.split("INSERT INTO {q}")[0]
        + "SELECT pgmq.send(%(queue)s, %(message)s, %(headers)s, coalesce(%(at)s::timestamptz,"
        " clock_timestamp() + make_interval(secs => %(delay)s))), pg_notify(%(channel)s, '')"
        " FROM logged"
    )
    commands = [bench.Ping(**env.ping_kwargs(i)) for i in range(n)]
    plain_insert = text.replace("    ON CONFLICT DO NOTHING\n", "")
    assert plain_insert != text
    text, without_notify, queue_only, plain_insert, through_pgmq_send = (
        sql.SQL(t)
        .format(
            q=table,
            qname=sql.Literal(table.as_string(None)),  # type: ignore[arg-type]
            domain=sql.Literal("bench"),
            channel=sql.Literal("cbus_bench"),
            attempts=sql.Literal(_ATTEMPTS),
        )
        .as_string()
        .encode()
        for t in (text, without_notify, queue_only, plain_insert, through_pgmq_send)
    )
    names = ["ac", "ready", "quiet", "nolog", "plain", "pgmqsend", "gen", "tx", "pipe"]
    conns = {k: psycopg.connect(dsn, autocommit=k not in ("tx", "pipe")) for k in names}
    try:
        ready = {
            k: [_send_params(c) for c in commands]
            for k in ("ready", "quiet", "nolog", "plain", "pgmqsend")
        }
        tx_params = [_send_params(c) for c in commands]
        pipe_params = [_send_params(c) for c in commands]
        kwargs = [env.ping_kwargs(i) for i in range(n)]

        def in_tx(i: int) -> None:
            conns["tx"].execute(
                query("send", env.QUEUE, domain="bench", attempts=_ATTEMPTS), tx_params[i]
            ).fetchone()
            conns["tx"].commit()

        def piped(i: int) -> None:
            conn = conns["pipe"]
            with conn.pipeline():
                cur = conn.execute(
                    query("send", env.QUEUE, domain="bench", attempts=_ATTEMPTS), pipe_params[i]
                )
                conn.commit()
            assert cur.fetchone() is not None

        ops = {
            "raw pgmq.send, autocommit": floor.send_op(conns["ac"], n),
            "send statement, ready": lambda i: (
                conns["ready"].execute(text, ready["ready"][i]).fetchone()
            ),
            "  same, without pg_notify": lambda i: (
                conns["quiet"].execute(without_notify, ready["quiet"][i]).fetchone()
            ),
            "  same, without the log row": lambda i: (
                conns["nolog"].execute(queue_only, ready["nolog"][i]).fetchone()
            ),
            "  same, through pgmq.send (until 0.1.x)": lambda i: (
                conns["pgmqsend"].execute(through_pgmq_send, ready["pgmqsend"][i]).fetchone()
            ),
            "  same, plain INSERT (no ON CONFLICT)": lambda i: (
                conns["plain"].execute(plain_insert, ready["plain"][i]).fetchone()
            ),
            "generated sender, autocommit": lambda i: bench.send_ping(conns["gen"], **kwargs[i]),
            "send statement, BEGIN/send/COMMIT": in_tx,
            "  same, in pipeline mode (1 round trip)": piped,
        }
        return env.interleave(ops, n, block=100, step=1)
    finally:
        for conn in conns.values():
            conn.close()


def send_many_parts(dsn: str, bench: Any, n: int) -> dict[str, float]:
    """What cbus.send_many(100) costs beyond pgmq.send_batch(100), interleaved a batch at a time."""
    commands = [bench.Ping(**env.ping_kwargs(i)) for i in range(n)]

    def build(i: int) -> Any:
        groups = send_many_params(
            commands[i : i + 100],
            command_ids=None,
            correlation_id=None,
            reply_to=None,
            delay=None,
            batch_id=None,
        )[0]
        return groups[0]

    conns = {k: psycopg.connect(dsn, autocommit=True) for k in ("raw", "many", "tx", "pipe")}
    try:
        tx_groups = [build(i) for i in range(0, n, 100)]
        pipe_groups = [build(i) for i in range(0, n, 100)]

        def in_tx(i: int) -> None:
            conn, group = conns["tx"], tx_groups[i // 100]
            with conn.transaction():
                conn.execute(query("send_many_log"), group.log).fetchall()
                conn.execute(query("send_many_queue", env.QUEUE), group.queue_params).fetchall()

        def piped(i: int) -> None:
            conn, group = conns["pipe"], pipe_groups[i // 100]
            with conn.pipeline(), conn.transaction():
                logged = conn.execute(query("send_many_log"), group.log)
                sent = conn.execute(query("send_many_queue", env.QUEUE), group.queue_params)
            assert len(logged.fetchall()) == 100 and sent.fetchall()

        ops = {
            "raw pgmq.send_batch(100)": floor.send_batch_op(conns["raw"], n),
            "cbus.send_many(100)": sends.send_many_op(bench, conns["many"], n),
            "  its 2 statements, ready, BEGIN..COMMIT": in_tx,
            "  its 2 statements, pipelined": piped,
            "  building its parameters (no I/O)": build,
        }
        return env.interleave(ops, n, block=100, step=100)
    finally:
        for conn in conns.values():
            conn.close()


def run_all(
    dsn: str, bench: Any, *, quick: bool, report: Callable[[Result], Any] = print
) -> list[Result]:
    """Every experiment once per repeat (median of 3, or 1 with quick); returns the results."""
    n = 5000 if quick else 10000
    repeat = 1 if quick else 3
    write_n = 2000 if quick else 5000

    class Noop(bench.BenchHandlers):  # type: ignore[misc,name-defined]
        def ping(self, cmd: Any, ctx: Any) -> None:
            return None

    runtime = DomainRuntime.of(Noop())
    cases: list[env.Case] = []

    def measure(
        name: str, group: str, count: int, fn: Callable[[], float], *, fill: bool = True
    ) -> None:
        def run() -> float:
            if fill:
                sends.fill(dsn, bench, count)
            return fn()

        cases.append(env.Case(name, group, count, run))

    def hot(fn: Callable[[], float], count: int) -> Callable[[], float]:
        """Run fn with the command log set up for HOT updates, then put it back."""

        def run() -> float:
            with psycopg.connect(dsn, autocommit=True) as conn:
                dropped = conn.execute(BLOCKING_INDEXES).fetchall()
                for name, _ in dropped:
                    conn.execute(sql.SQL("DROP INDEX cbus.{}").format(sql.Identifier(name)))
                conn.execute("ALTER TABLE cbus.command SET (fillfactor = 50)")
            try:
                sends.fill(dsn, bench, count)
                return fn()
            finally:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    for _, definition in dropped:
                        conn.execute(definition)
                    conn.execute("ALTER TABLE cbus.command RESET (fillfactor)")

        return run

    group = "no-op handler, batch of 100"
    measure(
        "raw read(100) + delete(ids[])",
        group,
        n,
        lambda: floor.read_delete(dsn, n, 100),
        fill=False,
    )
    measure("cbus loop: read; BEGIN, ack, COMMIT", group, n, lambda: drain(dsn, runtime, n))
    measure(
        "  same, in pipeline mode",
        group,
        n,
        lambda: drain(dsn, runtime, n, pipeline=True),
    )
    measure(
        "  same, read inside the transaction",
        group,
        n,
        lambda: drain(dsn, runtime, n, read_in_transaction=True),
    )
    measure(
        "  same, SAVEPOINT + RELEASE per message",
        group,
        n,
        lambda: drain(dsn, runtime, n, handler=savepoint_release),
    )
    measure(
        "  same, HOT log updates (BLOCKING_INDEXES)",
        group,
        n,
        hot(lambda: drain(dsn, runtime, n), n),
        fill=False,
    )
    measure(
        "  same, plain pgmq.read: no log write at read",
        group,
        n,
        lambda: drain(dsn, runtime, n, read_plain=True),
    )
    measure(
        "  same, plain read and HOT log updates",
        group,
        n,
        hot(lambda: drain(dsn, runtime, n, read_plain=True), n),
        fill=False,
    )
    measure(
        "  same, ack without its pg_notify",
        group,
        n,
        lambda: drain(dsn, runtime, n, ack=ack_quiet),
    )
    measure(
        "  same, audit row per message",
        group,
        n,
        lambda: drain(dsn, runtime, n, audit=True),
    )
    measure(
        "  same, ack by executemany",
        group,
        n,
        lambda: drain(dsn, runtime, n, ack=ack_executemany),
    )
    measure(
        "  same, never prepared",
        group,
        n,
        lambda: drain(dsn, runtime, n, prepare_threshold=None),
    )
    measure(
        "  same, prepared at once",
        group,
        n,
        lambda: drain(dsn, runtime, n, prepare_threshold=0),
    )

    group = "handler inserts 1 row, batch of 100"
    measure(
        "insert, no savepoint", group, write_n, lambda: drain(dsn, runtime, write_n, handler=insert)
    )
    measure(
        "insert, SAVEPOINT first, 60 per transaction (today)",
        group,
        write_n,
        lambda: drain(dsn, runtime, write_n, handler=savepoint_insert, chunk=60),
    )
    measure(
        "insert, SAVEPOINT + RELEASE, 60 per transaction",
        group,
        write_n,
        lambda: drain(dsn, runtime, write_n, handler=savepoint_insert_release, chunk=60),
    )
    measure(
        "insert, pipeline mode, no savepoint",
        group,
        write_n,
        lambda: drain(dsn, runtime, write_n, handler=insert, pipeline=True),
    )
    measure(
        "insert, pipeline mode, SAVEPOINT first, 60 per tx",
        group,
        write_n,
        lambda: drain(dsn, runtime, write_n, handler=savepoint_insert, pipeline=True, chunk=60),
    )

    measure(
        "insert, pipeline, SAVEPOINT first, sync per handler",
        group,
        write_n,
        lambda: drain(
            dsn, runtime, write_n, handler=savepoint_insert, pipeline=True, chunk=60, sync_each=True
        ),
    )
    measure(
        "insert, pipeline, no savepoint, plain read, HOT log",
        group,
        write_n,
        hot(
            lambda: drain(dsn, runtime, write_n, handler=insert, pipeline=True, read_plain=True),
            write_n,
        ),
        fill=False,
    )

    group = "decoding 100-row batches"
    measure(
        "jsonb as bytes -> msgspec decode",
        group,
        n,
        lambda: decode_rows(dsn, runtime, n, as_bytes=True),
    )
    measure(
        "jsonb parsed by psycopg -> msgspec convert",
        group,
        n,
        lambda: decode_rows(dsn, runtime, n, as_bytes=False),
    )

    names = [
        "raw pgmq.send, autocommit",
        "send statement, ready",
        "  same, without pg_notify",
        "  same, without the log row",
        "  same, through pgmq.send (until 0.1.x)",
        "  same, plain INSERT (no ON CONFLICT)",
        "generated sender, autocommit",
        "send statement, BEGIN/send/COMMIT",
        "  same, in pipeline mode (1 round trip)",
    ]
    group = "one send per transaction, interleaved"
    cases.append(
        env.Case(
            "single send parts",
            group,
            write_n,
            lambda: single_send_parts(dsn, bench, write_n),
            outputs=dict.fromkeys(names, group),
        )
    )
    names = [
        "raw pgmq.send_batch(100)",
        "cbus.send_many(100)",
        "  its 2 statements, ready, BEGIN..COMMIT",
        "  its 2 statements, pipelined",
        "  building its parameters (no I/O)",
    ]
    group = "send_many(100), interleaved"
    cases.append(
        env.Case(
            "send_many parts",
            group,
            n,
            lambda: send_many_parts(dsn, bench, n),
            outputs=dict.fromkeys(names, group),
        )
    )
    return env.rounds(dsn, cases, repeat, report)


def table(results: list[Result]) -> str:
    lines = [f"{'experiment':<52} {'msg/s':>10} {'ratio':>7}", "-" * 72]
    group = None
    base = 0.0
    for r in results:
        if r.section != group:
            group = r.section
            base = r.value
            lines.append(f"[{group}]  ratio to the first line")
        lines.append(f"{r.name:<52} {r.value:>10,.0f} {r.value / base:6.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from cbus.devdb import DevServer

    with tempfile.TemporaryDirectory(prefix="cbus-bench-") as tmp, DevServer() as server:
        bench = env.import_bench(env.generate(Path(tmp) / "gen"))
        env.install(server.dsn, bench)
        started = time.perf_counter()
        results = run_all(
            server.dsn,
            bench,
            quick=args.quick,
            report=lambda r: print(f"    {r.name:<52} {r.runs[-1]:>10,.0f}", flush=True),
        )
    print()
    print(table(results))
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
