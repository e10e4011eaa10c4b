"""Sends/s and drain/s as the owner and as `cbus db roles` roles, side by side (ADR 0007).

    PYTHONPATH=generated .venv/bin/python bench/roles.py [--n 10000] [--rounds 3] [--concurrency 2]

On a throwaway embedded server, the `shop.orders` domain:

- `owner`: the tables' owner without row-level security (as before `cbus db roles`);
- `owner+rls`: the same role once `cbus db roles` enabled row-level security (owners
  bypass it: this is the default set-up after roles exist);
- `roles`: the producer sends and the worker drains as their least-privilege roles,
  every statement on cbus's tables filtered by the domain policies.

Rounds interleave the set-ups; the median and the best of each are printed, one
JSON line per set-up (on a shared machine, noise only ever slows a round down).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from typing import Any

import cbus
import psycopg
from cbus import roles
from cbus.devdb import DevServer
from psycopg.conninfo import make_conninfo
from shop import orders


class Noop(orders.OrdersHandlers):
    def cancel_order(self, cmd: Any, ctx: cbus.Context) -> None:
        return None


def _sends(dsn: str, n: int) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = [uuid.uuid4() for _ in range(n)]
        start = time.perf_counter()
        for order_id in ids:
            orders.send_cancel_order(conn, order_id=order_id)
        return n / (time.perf_counter() - start)


def _drain(dsn: str, n: int, concurrency: int) -> float:
    """Commands per second from the worker's start to the last command's end.

    Timed by the server's clock and the log's finished_at: the time `until_idle`
    takes to notice the queue is empty comes in steps of half a second.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = conn.execute("SELECT clock_timestamp()").fetchone()
        worker = cbus.Worker(dsn, [Noop()], concurrency=concurrency, poll_interval=0.05)
        worker.run(until_idle=True)
        assert worker.completed == n, (worker.completed, n)
        end = conn.execute(
            "SELECT max(finished_at) FROM cbus.command WHERE domain = 'orders'"
        ).fetchone()
        assert start is not None and end is not None
        elapsed: float = (end[0] - start[0]).total_seconds()
        return n / elapsed


def _row_security(dsn: str, verb: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("command", "audit", "troubleshooting"):
            conn.execute(f"ALTER TABLE cbus.{table} {verb} ROW LEVEL SECURITY")  # bench only


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    with DevServer() as server:
        with psycopg.connect(server.dsn, autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench_roles")
        dsn = server.dsn_for("bench_roles")
        with psycopg.connect(dsn, autocommit=True) as conn:
            cbus.install(conn)
            cbus.install_domain(conn, orders.DOMAIN)
        results: dict[str, dict[str, list[float]]] = {}

        def measure(name: str, send_dsn: str, work_dsn: str) -> None:
            got = results.setdefault(name, {"sends_per_s": [], "drain_per_s": []})
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("TRUNCATE cbus.command, cbus.audit")  # each run on a fresh log
            got["sends_per_s"].append(_sends(send_dsn, args.n))
            got["drain_per_s"].append(_drain(work_dsn, args.n, args.concurrency))

        with psycopg.connect(dsn, autocommit=True) as conn:
            roles.grant(conn, "producer", "bench_producer", [orders.DOMAIN])
            roles.grant(conn, "worker", "bench_worker", [orders.DOMAIN])
        producer = make_conninfo(dsn, options="-c role=bench_producer")
        worker = make_conninfo(dsn, options="-c role=bench_worker")
        for _ in range(args.rounds):
            _row_security(dsn, "DISABLE")  # as before `cbus db roles`
            measure("owner", dsn, dsn)
            _row_security(dsn, "ENABLE")
            measure("owner+rls", dsn, dsn)
            measure("roles", producer, worker)
        for name, got in results.items():
            line: dict[str, float] = {k: round(statistics.median(v)) for k, v in got.items()}
            line.update({f"best_{k}": round(max(v)) for k, v in got.items()})
            rounds = {k: [round(x) for x in v] for k, v in got.items()}
            # Each round's rate over the owner's in the same round: noise that slows a
            # whole round cancels out.
            base = results["owner"]
            line.update(
                {
                    f"ratio_{k}": round(
                        statistics.median(x / y for x, y in zip(v, base[k], strict=True)), 3
                    )
                    for k, v in got.items()
                }
            )
            print(json.dumps({"setup": name, "n": args.n, **line, "rounds": rounds}))


if __name__ == "__main__":
    main()
