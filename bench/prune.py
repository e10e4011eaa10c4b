"""Retention's cost (ADR 0009): the pruner's batched DELETE against dropping partitions,
PGMQ's partitioned queue (pg_partman) against a plain one, and a drain with the pruner
deleting beside it against a drain without.

    python bench/prune.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres] [--rows 200000]
        [--drain 20000]

Runs on the given server (PostgreSQL 15 with pg_partman for the partitioned cases) in
a database of its own, created and dropped here; prints a table and writes
bench/results/prune.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
import env

RESULTS = Path(__file__).resolve().parent / "results" / "prune.json"


def seed_log(conn: psycopg.Connection[Any], rows: int) -> None:
    """`rows` completed commands, half ended 8 days ago (due at 7d), each with an audit row,
    and a quarter as many archived messages, half 31 days old (due at 30d)."""
    conn.execute(
        "INSERT INTO cbus.command (domain, command_id, kind, version, status, max_attempts,"
        " correlation_id, created_at, updated_at, finished_at)"
        " SELECT 'bench', gen_random_uuid(), 'bench.Ping', 1, 'COMPLETED', 5, gen_random_uuid(),"
        "  t, t, t FROM (SELECT now() - CASE WHEN i %% 2 = 0 THEN interval '8 days'"
        "  ELSE interval '1 hour' END - i * interval '1 ms' AS t"
        "  FROM generate_series(1, %s) AS i ORDER BY 1) AS s",
        (rows,),
    )
    conn.execute(
        "INSERT INTO cbus.audit (domain, command_id, event, at)"
        " SELECT domain, command_id, 'completed', finished_at - interval '22 days'"
        " FROM cbus.command ORDER BY finished_at"
    )
    conn.execute(
        "INSERT INTO pgmq.a_bench__commands (msg_id, read_ct, enqueued_at, archived_at, vt,"
        " message, headers) SELECT i, 1, now(), now() - CASE WHEN i %% 2 = 0"
        " THEN interval '31 days' ELSE interval '1 day' END, now(), '{}',"
        " jsonb_build_object('kind', 'bench.Ping', 'command_id', gen_random_uuid()::text)"
        " FROM generate_series(1, %s) AS i",
        (rows // 4,),
    )
    conn.execute("VACUUM ANALYZE cbus.command, cbus.audit, pgmq.a_bench__commands")


class Timed(psycopg.Connection[Any]):
    """A connection that records how long each statement (each transaction) took."""

    took: list[float]

    def execute(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        t0 = time.perf_counter()
        try:
            return super().execute(*args, **kwargs)
        finally:
            self.took.append(time.perf_counter() - t0)


def prune_cost(dsn: str, rows: int) -> dict[str, Any]:
    from cbus._pruner import prune

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE cbus.command, cbus.audit, pgmq.a_bench__commands")
        seed_log(conn, rows)
    with Timed.connect(dsn, autocommit=True) as conn:
        conn.took = []
        t0 = time.perf_counter()
        done = prune(conn, domains=["bench"])
        seconds = time.perf_counter() - t0
    assert done is not None
    removed = done[0].total
    return {
        "rows_seeded": rows + rows + rows // 4,
        "removed": done[0].counts,
        "seconds": round(seconds, 3),
        "rows_per_s": round(removed / seconds),
        "statements": len(conn.took),
        "longest_statement_ms": round(max(conn.took) * 1000, 1),
    }


def partition_cost(dsn: str, rows: int) -> dict[str, Any]:
    """The same log, range-partitioned by day of created_at: prune by DROP of due days."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS part_log")
        conn.execute(
            "CREATE TABLE part_log (LIKE cbus.command INCLUDING DEFAULTS,"
            " PRIMARY KEY (domain, command_id, created_at)) PARTITION BY RANGE (created_at)"
        )
        for day in range(-10, 2):
            conn.execute(
                f"CREATE TABLE part_log_{day + 10} PARTITION OF part_log FOR VALUES FROM"
                f" (date_trunc('day', now()) + interval '{day} days') TO"
                f" (date_trunc('day', now()) + interval '{day + 1} days')"
            )
        conn.execute("TRUNCATE cbus.command, cbus.audit, pgmq.a_bench__commands")
        seed_log(conn, rows)
        conn.execute("INSERT INTO part_log SELECT * FROM cbus.command")
        conn.execute("VACUUM ANALYZE part_log")
        due = conn.execute(
            "SELECT c.relname, (SELECT count(*) FROM part_log WHERE tableoid = c.oid)"
            " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'part_log'::regclass AND c.relname IN"
            " (SELECT 'part_log_' || n FROM generate_series(0, 2) AS n)"
        ).fetchall()
        t0 = time.perf_counter()
        removed = 0
        for name, n in due:
            conn.execute(f"ALTER TABLE part_log DETACH PARTITION {name}")
            conn.execute(f"DROP TABLE {name}")
            removed += n
        seconds = time.perf_counter() - t0
        conn.execute("DROP TABLE part_log")
    return {
        "removed": removed,
        "seconds": round(seconds, 4),
        "rows_per_s": round(removed / seconds) if seconds else None,
    }


def pgmq_partitioned(dsn: str, n: int) -> dict[str, Any]:
    """Send then read+delete `n` messages, 100 at a time, on a plain and a partitioned queue."""
    out: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("CREATE SCHEMA IF NOT EXISTS partman")
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman")
        except psycopg.Error as exc:
            return {"skipped": f"pg_partman: {exc}".splitlines()[0]}
        conn.execute("SELECT pgmq.create('plain_q')")
        conn.execute("SELECT pgmq.create_partitioned('part_q', '10000', '100000')")
        for queue in ("plain_q", "part_q"):
            t0 = time.perf_counter()
            for _ in range(0, n, 100):
                conn.execute(
                    "SELECT pgmq.send_batch(%s, array_fill('{\"x\": 1}'::jsonb, ARRAY[100]))",
                    (queue,),
                )
            sent = time.perf_counter() - t0
            t0 = time.perf_counter()
            drained = 0
            while True:
                ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT msg_id FROM pgmq.read(%s, 30, 100)", (queue,)
                    ).fetchall()
                ]
                if not ids:
                    break
                conn.execute("SELECT pgmq.delete(%s, %s::bigint[])", (queue, ids))
                drained += len(ids)
            took = time.perf_counter() - t0
            out[queue] = {"send_per_s": round(n / sent), "drain_per_s": round(drained / took)}
    out["drain_ratio_partitioned_over_plain"] = round(
        out["part_q"]["drain_per_s"] / out["plain_q"]["drain_per_s"], 3
    )
    out["send_ratio_partitioned_over_plain"] = round(
        out["part_q"]["send_per_s"] / out["plain_q"]["send_per_s"], 3
    )
    return out


def drain(dsn: str, bench: Any, n: int, rows: int, pace: float | None) -> dict[str, Any]:
    """Drain `n` pings with a 4-consumer worker; with a `pace` (None: no pruner), a pruner
    in the same process deletes a backlog of `rows` due commands (and their audit rows
    and archived messages) beside it, pass after pass, paced as a worker's (1.0) or not
    at all (0.0)."""
    pruning = pace is not None
    import cbus
    from cbus._pruner import prune

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE cbus.command, cbus.audit, pgmq.a_bench__commands")
        conn.execute("TRUNCATE pgmq.q_bench__commands")
        if pruning:
            seed_log(conn, rows)
    with psycopg.connect(dsn) as conn:
        for i in range(n):
            bench.send_ping(conn, **env.ping_kwargs(i))
        conn.commit()
    env.settle(dsn)
    calls: list[float] = []

    class Handler(bench.BenchHandlers):  # type: ignore[misc,name-defined]
        def ping(self, cmd: Any, ctx: Any) -> None:
            calls.append(time.perf_counter())

    stop = threading.Event()
    pruned = [0]

    def pruner() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                done = prune(conn, domains=["bench"], stop=stop.is_set, pace=pace or 0.0)
                if done:
                    pruned[0] += done[0].total

    thread = threading.Thread(target=pruner)
    if pruning:
        thread.start()
    cbus.Worker(dsn, handlers=[Handler()], concurrency=4).run(until_idle=True)
    stop.set()
    if pruning:
        thread.join()
    seconds = calls[-1] - calls[0]
    return {"n": len(calls), "per_s": round(len(calls) / seconds), "pruned_meanwhile": pruned[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--drain", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    name = f"cbus_prune_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        version = admin.execute("SHOW server_version").fetchone()
    dsn = make_conninfo(args.dsn, dbname=name)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bench = env.import_bench(env.generate(Path(tmp) / "gen"))
            env.install(dsn, bench)
            results: dict[str, Any] = {
                "server": version[0] if version else "?",
                "python": platform.python_version(),
                "rows": args.rows,
                "prune_batched_delete": prune_cost(dsn, args.rows),
                "prune_drop_partitions": partition_cost(dsn, args.rows),
                "pgmq_partitioned_queue": pgmq_partitioned(dsn, args.drain),
            }
            paces = {"without": None, "paced": 1.0, "unpaced": 0.0}
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in paces}
            for _ in range(args.rounds):  # alternated; the median of each
                for key, pace in paces.items():
                    runs[key].append(drain(dsn, bench, args.drain, args.rows, pace))
            median = {k: statistics.median(r["per_s"] for r in v) for k, v in runs.items()}
            results["drain"] = {
                "runs": runs,
                "median_per_s": median,
                "ratio_paced_pruner": round(median["paced"] / median["without"], 3),
                "ratio_unpaced_pruner": round(median["unpaced"] / median["without"], 3),
            }
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    b, p, q, d = (
        results["prune_batched_delete"],
        results["prune_drop_partitions"],
        results["pgmq_partitioned_queue"],
        results["drain"],
    )
    print(f"{'case':52} {'figure':>14}")
    print(f"{'batched DELETE: rows removed/s':52} {b['rows_per_s']:>14,}")
    print(f"{'batched DELETE: longest statement (ms)':52} {b['longest_statement_ms']:>14}")
    print(f"{'DROP partitions: rows removed/s':52} {p['rows_per_s'] or 0:>14,}")
    if "skipped" not in q:
        drained, sent = (q[f"{k}_ratio_partitioned_over_plain"] for k in ("drain", "send"))
        print(f"{'PGMQ partitioned/plain: drain ratio':52} {drained:>14}")
        print(f"{'PGMQ partitioned/plain: send ratio':52} {sent:>14}")
    print(f"{'drain with paced pruner / without (c=4)':52} {d['ratio_paced_pruner']:>14}")
    print(f"{'drain with unpaced pruner / without (c=4)':52} {d['ratio_unpaced_pruner']:>14}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
